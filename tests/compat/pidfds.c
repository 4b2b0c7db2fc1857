/* Conformance victim: see tests/workloads/proc_pidfd.c for what it checks.
 *
 * compat-object: pidfds of itself, of a child and of an exited child not reaped (zombie)
 * compat-dump-args: --tree
 */
#include "proc_pidfd.c"
