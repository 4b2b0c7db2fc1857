/* Conformance victim: see tests/workloads/proc_cow.c for what it checks.
 *
 * compat-object: memory shared copy-on-write between a parent and its child after fork
 * compat-dump-args: --tree
 *
 * The restore forks the child from its restored parent, which keeps the pages they share
 * (see docs/engine.md, "Memory shared copy-on-write after fork").
 */
#define CHECK_SHARING 1
#include "proc_cow.c"
