/* Conformance victim: proc_clone_files.c with a child that shares the parent's files (clone
 * without CLONE_THREAD); see tests/workloads/proc_clone_files.c.
 *
 * compat-object: clone(CLONE_FILES) without CLONE_THREAD: files shared between two processes
 * compat-dump-args: --tree
 */
#define main proc_main
#include "proc_clone_files.c"
#undef main
int main(int argc, char **argv)
{
	char *args[] = {argv[0], argc > 1 ? argv[1] : NULL, "files", NULL};
	return proc_main(argc > 1 ? 3 : argc, args);
}
