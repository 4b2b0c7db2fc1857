/* Conformance victim: see tests/workloads/proc_cow.c for what it checks.
 *
 * compat-object: memory shared copy-on-write between a parent and its child after fork
 * compat-dump-args: --tree
 *
 * Expected to FAIL until the restore makes the sharing again (the restore warns and the checker
 * names the change; see docs/engine.md).
 */
#define CHECK_SHARING 1
#include "proc_cow.c"
