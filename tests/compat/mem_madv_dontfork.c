/* madvise MADV_DONTFORK: applied to pages 2-5 of an 8-page anonymous area (so its VMA is split), with contents.
 * check: the VMA [2,6) exists with VmFlags "dc", the neighbours lack it, the bytes are intact, and a forked child lacks the pages.
 * compat-object: madvise MADV_DONTFORK
 */
#define VMA_FLAG "dc"
#define VMA_APPLY madvise(area + 2 * PS, 4 * PS, MADV_DONTFORK)
#include "vma_flag.h"

static const char *extra(void)
{
	pid_t c = fork();
	if (c < 0)
		return "fork";
	if (c == 0) {
		unsigned char v;
		_exit(mincore(area + 2 * PS, PS, &v) == -1 && errno == ENOMEM && area[0] == pat(0) ? 0 : 1);
	}
	int st;
	if (waitpid(c, &st, 0) != c || !WIFEXITED(st) || WEXITSTATUS(st))
		return "a forked child still has the DONTFORK pages (or lacks the others)";
	return NULL;
}
