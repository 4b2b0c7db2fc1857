/* mlock2(MLOCK_ONFAULT): applied to pages 2-5 of an 8-page anonymous area (so its VMA is split), with contents.
 * check: the VMA [2,6) exists with VmFlags "lf", the neighbours lack it, the bytes are intact, and lo too.
 * compat-object: mlock2(MLOCK_ONFAULT)
 */
#define VMA_FLAG "lf"
#define VMA_APPLY mlock2(area + 2 * PS, 4 * PS, MLOCK_ONFAULT)
#include "vma_flag.h"

static const char *extra(void)
{
	char fl[256];
	unsigned long s, e;
	vma_of(area + 2 * PS, &s, &e, fl, sizeof(fl));
	if (!has_flag(fl, "lo"))
		return "VMA lacks lo";
	return NULL;
}
