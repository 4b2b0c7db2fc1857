/* Conformance victim: see tests/workloads/proc_stopped_child.c for what it checks.
 *
 * compat-object: a child stopped by SIGSTOP (job control), its parent's SIGCHLD and waitpid view
 * compat-dump-args: --tree
 */
#include "../workloads/proc_stopped_child.c"
