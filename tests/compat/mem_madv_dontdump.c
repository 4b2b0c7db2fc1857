/* madvise MADV_DONTDUMP: applied to pages 2-5 of an 8-page anonymous area (so its VMA is split), with contents.
 * check: the VMA [2,6) exists with VmFlags "dd", the neighbours lack it, the bytes are intact.
 * compat-object: madvise MADV_DONTDUMP
 */
#define VMA_FLAG "dd"
#define VMA_APPLY madvise(area + 2 * PS, 4 * PS, MADV_DONTDUMP)
#include "vma_flag.h"

static const char *extra(void)
{
	return NULL;
}
