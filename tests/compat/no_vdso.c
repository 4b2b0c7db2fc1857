/* Conformance victim: see tests/workloads/proc_no_vdso.c for what it checks.
 *
 * compat-object: a process that unmapped its vDSO
 */
#include "../workloads/proc_no_vdso.c"
