/* Conformance victim: see tests/workloads/proc_epoll_reused.c for what it checks.
 *
 * compat-object: epoll entries whose descriptor number was closed or reused (two entries under one number)
 */
#include "../workloads/proc_epoll_reused.c"
