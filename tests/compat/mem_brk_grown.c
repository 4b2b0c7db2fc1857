/* The heap grown with sbrk by 1 MiB + 5 pages and written: the program break stays where it was,
 * the bytes stay, and it can still grow and shrink back.
 * compat-object: brk heap grown
 */
#include "common.h"

#define SZ (1024 * 1024 + 5 * 4096)
static unsigned char *heap;
static void *brk_at;

static const char *check(void)
{
	static char why[128];
	if (sbrk(0) != brk_at) {
		snprintf(why, sizeof(why), "break %p want %p", sbrk(0), brk_at);
		return why;
	}
	for (unsigned long i = 0; i < SZ; i += 61)
		if (heap[i] != (unsigned char)(i * 5))
			return "heap bytes differ";
	unsigned char *more = sbrk(8192);
	if (more == (void *)-1 || more != brk_at)
		return "sbrk growth failed or moved";
	more[8191] = 1;
	if (sbrk(-8192) == (void *)-1 || sbrk(0) != brk_at)
		return "sbrk shrink failed";
	return NULL;
}

static void setup(void)
{
	heap = sbrk(SZ);
	if (heap == (void *)-1)
		fr_die("sbrk");
	for (unsigned long i = 0; i < SZ; i += 61)
		heap[i] = (unsigned char)(i * 5);
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
