/* An area grown by mremap(MREMAP_MAYMOVE) to a new address, and another shrunk in place: the new
 * bounds, the old address unmapped, the bytes moved with it.
 * compat-object: mremap'd areas (moved and grown, shrunk)
 */
#include "common.h"

#include <sys/mman.h>

#define PS 4096ul
static unsigned char *old, *moved, *shrunk;

static const char *check(void)
{
	unsigned char v;
	if (mincore(old, PS, &v) != -1 || errno != ENOMEM)
		return "the old address is mapped again";
	if (mincore(moved, 64 * PS, (unsigned char[64]){0}))
		return "the grown area is not mapped in full";
	for (unsigned long i = 0; i < 4 * PS; i++)
		if (moved[i] != (unsigned char)(i * 3 + 1))
			return "the moved bytes differ";
	for (unsigned long i = 4 * PS; i < 64 * PS; i += PS)
		if (moved[i + 5] != 0x42)
			return "the bytes written after the move differ";
	if (mincore(shrunk + 2 * PS, PS, &v) != -1 || errno != ENOMEM)
		return "the tail cut by the shrink is mapped";
	if (shrunk[0] != 9 || shrunk[PS] != 10)
		return "the shrunk area's bytes differ";
	return NULL;
}

static void setup(void)
{
	/* keep the space after `old` taken so that the growth must move */
	old = mmap(NULL, 8 * PS, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (old == MAP_FAILED)
		fr_die("mmap");
	munmap(old + 4 * PS, 4 * PS);
	if (mmap(old + 4 * PS, PS, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) == MAP_FAILED)
		fr_die("mmap blocker");
	for (unsigned long i = 0; i < 4 * PS; i++)
		old[i] = (unsigned char)(i * 3 + 1);
	moved = mremap(old, 4 * PS, 64 * PS, MREMAP_MAYMOVE);
	if (moved == MAP_FAILED || moved == old)
		fr_die("mremap did not move");
	for (unsigned long i = 4 * PS; i < 64 * PS; i += PS)
		moved[i + 5] = 0x42;
	shrunk = mmap(NULL, 8 * PS, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	shrunk[0] = 9;
	shrunk[PS] = 10;
	if (mremap(shrunk, 8 * PS, 2 * PS, 0) != shrunk)
		fr_die("mremap shrink");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	setup();
	fr_ready();
	for (unsigned long tick = 1;; tick++) {
		if (fr_usr1_pending) {
			fr_usr1_pending = 0;
			const char *why = getpid() != fr_pid0 ? "getpid() changed" : check();
			if (why)
				fr_status("BAD %s", why);
			else
				fr_status("ok pid=%d", (int)getpid());
		}
		fr_log_tick(tick);
		usleep(10000);
	}
}
