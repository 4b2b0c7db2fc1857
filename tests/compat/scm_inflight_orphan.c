/* Conformance victim: a descriptor in flight that no process holds any more.
 * compat-object: descriptor in flight no process holds (an eventfd passed, then closed)
 * compat-refuse: descriptors in flight
 *
 * tests/workloads/scm_inflight.c with a third socketpair whose queue passes an eventfd that
 * the process closed after sending: ferry carries pipes and files nobody holds
 * (sock_unix_scm_rights_alone), not such objects yet, and refuses the dump naming it. check() is the one of scm_inflight (the other queues).
 */
#define SCM_ORPHAN 1
#include "../workloads/scm_inflight.c"
