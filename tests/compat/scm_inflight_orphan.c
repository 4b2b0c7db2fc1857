/* Conformance victim: a descriptor in flight that no process holds any more.
 * compat-object: descriptor in flight no process holds (a pipe end passed, then closed)
 * compat-refuse: descriptors in flight
 *
 * tests/workloads/scm_inflight.c with a third socketpair whose queue passes a pipe's read
 * end that the process closed after sending (both ends): ferry cannot name it and refuses the
 * dump. check() is the one of scm_inflight (the other queues).
 */
#define SCM_ORPHAN 1
#include "../workloads/scm_inflight.c"
