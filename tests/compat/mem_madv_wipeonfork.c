/* madvise MADV_WIPEONFORK: applied to pages 2-5 of an 8-page anonymous area (so its VMA is split), with contents.
 * check: the VMA [2,6) exists with VmFlags "wf", the neighbours lack it, the bytes are intact, and a forked child sees those pages zero.
 * compat-object: madvise MADV_WIPEONFORK
 */
#define VMA_FLAG "wf"
#define VMA_APPLY madvise(area + 2 * PS, 4 * PS, MADV_WIPEONFORK)
#include "vma_flag.h"

static const char *extra(void)
{
	pid_t c = fork();
	if (c < 0)
		return "fork";
	if (c == 0) {
		for (unsigned long i = 2 * PS; i < 6 * PS; i++)
			if (area[i])
				_exit(1);
		_exit(area[0] == pat(0) ? 0 : 2);
	}
	int st;
	if (waitpid(c, &st, 0) != c || !WIFEXITED(st) || WEXITSTATUS(st))
		return "a forked child does not see the WIPEONFORK pages zeroed";
	return NULL;
}
