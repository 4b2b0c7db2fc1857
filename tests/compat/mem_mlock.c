/* mlock of part of an area: applied to pages 2-5 of an 8-page anonymous area (so its VMA is split), with contents.
 * check: the VMA [2,6) exists with VmFlags "lo", the neighbours lack it, the bytes are intact, and the locked pages are resident.
 * compat-object: mlock of part of an area
 */
#define VMA_FLAG "lo"
#define VMA_APPLY mlock(area + 2 * PS, 4 * PS)
#include "vma_flag.h"

static const char *extra(void)
{
	unsigned char v[4];
	if (mincore(area + 2 * PS, 4 * PS, v) || !(v[0] & v[1] & v[2] & v[3] & 1))
		return "locked pages not resident";
	return NULL;
}
