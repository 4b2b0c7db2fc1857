/* madvise MADV_MERGEABLE (KSM): applied to pages 2-5 of an 8-page anonymous area (so its VMA is split), with contents.
 * check: the VMA [2,6) exists with VmFlags "mg", the neighbours lack it, the bytes are intact.
 * compat-object: madvise MADV_MERGEABLE (KSM)
 */
#define VMA_FLAG "mg"
#define VMA_APPLY madvise(area + 2 * PS, 4 * PS, MADV_MERGEABLE)
#include "vma_flag.h"

static const char *extra(void)
{
	return NULL;
}
