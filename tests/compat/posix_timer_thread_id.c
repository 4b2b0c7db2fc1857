/* Conformance victim: see tests/workloads/proc_timer_thread.c for what it checks.
 *
 * compat-object: POSIX timer signalling one thread (SIGEV_THREAD_ID)
 */
#include "../workloads/proc_timer_thread.c"
