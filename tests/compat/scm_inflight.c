/* Conformance victim: descriptors and credentials in flight in Unix socketpairs.
 * compat-object: descriptors and credentials in flight (SCM_RIGHTS, SCM_CREDENTIALS)
 *
 * The victim is tests/workloads/scm_inflight.c (also used by tests/tests/inflight.rs):
 * datagrams passing a file nobody else holds (at an offset) and the read end of a pipe the
 * process holds, with the sender's credentials (SO_PASSCRED), one with credentials only, and
 * a stream message passing a second file. check() receives them and compares bytes, files,
 * offsets, the open file description (kcmp) and the credentials, then queues the next round.
 */
#include "../workloads/scm_inflight.c"
