/* madvise MADV_NOHUGEPAGE: applied to pages 2-5 of an 8-page anonymous area (so its VMA is split), with contents.
 * check: the VMA [2,6) exists with VmFlags "nh", the neighbours lack it, the bytes are intact.
 * compat-object: madvise MADV_NOHUGEPAGE
 */
#define VMA_FLAG "nh"
#define VMA_APPLY madvise(area + 2 * PS, 4 * PS, MADV_NOHUGEPAGE)
#include "vma_flag.h"

static const char *extra(void)
{
	return NULL;
}
