/* Conformance victim: see tests/workloads/proc_membarrier.c for what it checks.
 *
 * compat-object: membarrier private expedited registrations
 */
#include "proc_membarrier.c"
