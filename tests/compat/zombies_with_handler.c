/* Conformance victim: see tests/workloads/proc_zombie_handler.c for what it checks.
 *
 * compat-object: zombie children not reaped yet by a parent with a SIGCHLD handler
 * compat-dump-args: --tree
 */
#include "../workloads/proc_zombie_handler.c"
