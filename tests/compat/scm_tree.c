/* Conformance victim: a descriptor and credentials in flight between two processes.
 * compat-object: descriptor and credentials in flight between tree members (SCM_RIGHTS, SCM_CREDENTIALS)
 * compat-dump-args: --tree
 *
 * The victim is tests/workloads/scm_tree.c (also used by tests/tests/inflight.rs): a child
 * passes its parent, over a socketpair split by fork, a pipe end it still holds with its
 * credentials; check() receives it and compares bytes, credentials and the pipe's bytes,
 * then has the child queue the next one.
 */
#include "../workloads/scm_tree.c"
