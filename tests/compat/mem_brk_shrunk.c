/* The heap grown by 4 MiB then shrunk by 3 MiB with sbrk: the break, the kept bytes, and the
 * released range unmapped.
 * compat-object: brk heap grown then shrunk
 */
#include "common.h"

#include <sys/mman.h>

#define MB (1024 * 1024)
static unsigned char *heap;
static void *brk_at;

static const char *check(void)
{
	static char why[128];
	if (sbrk(0) != brk_at) {
		snprintf(why, sizeof(why), "break %p want %p", sbrk(0), brk_at);
		return why;
	}
	for (unsigned long i = 0; i < MB; i += 4096)
		if (heap[i] != (unsigned char)(i >> 12))
			return "heap bytes differ";
	unsigned char v;
	unsigned long above = ((unsigned long)brk_at + 4095) & ~4095ul;
	if (mincore((void *)(above + MB), 4096, &v) != -1 || errno != ENOMEM)
		return "the released heap range is mapped";
	return NULL;
}

static void setup(void)
{
	heap = sbrk(4 * MB);
	if (heap == (void *)-1)
		fr_die("sbrk");
	for (unsigned long i = 0; i < 4 * MB; i += 4096)
		heap[i] = (unsigned char)(i >> 12);
	sbrk(-3 * MB);
	brk_at = sbrk(0);
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
