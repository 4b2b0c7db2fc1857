/* madvise MADV_RANDOM on anonymous memory: applied to pages 2-5 of an 8-page anonymous area (so its VMA is split), with contents.
 * check: the VMA [2,6) exists with VmFlags "rr", the neighbours lack it, the bytes are intact.
 * compat-object: madvise MADV_RANDOM on anonymous memory
 */
#define VMA_FLAG "rr"
#define VMA_APPLY madvise(area + 2 * PS, 4 * PS, MADV_RANDOM)
#include "vma_flag.h"

static const char *extra(void)
{
	return NULL;
}
