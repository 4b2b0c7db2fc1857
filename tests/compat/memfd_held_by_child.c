/* Conformance victim: see tests/workloads/proc_memfd_child.c for what it checks.
 *
 * compat-object: a memfd whose only descriptor a child holds (the parent maps it)
 * compat-dump-args: --tree
 */
#include "proc_memfd_child.c"
