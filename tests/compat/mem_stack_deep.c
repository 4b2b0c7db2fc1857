/* The main loop runs at the bottom of a 4000-frame recursion (each frame with a 1 KiB local array,
 * about 5 MiB of stack, the [stack] area grown far below its start): every frame's bytes and the
 * chain of frame pointers are checked.
 * compat-object: deep main-thread stack (grown stack area)
 */
#include "common.h"

#include <sys/resource.h>

/* gcc cannot see that the recursion ends at DEPTH (the last frame loops forever) */
#pragma GCC diagnostic ignored "-Winfinite-recursion"

#define DEPTH 4000
static unsigned char *frames[DEPTH];

static const char *check(void)
{
	static char why[128];
	for (int d = 0; d < DEPTH; d++)
		for (int i = 0; i < 1024; i += 37)
			if (frames[d][i] != (unsigned char)(d * 7 + i)) {
				snprintf(why, sizeof(why), "frame %d byte %d differs", d, i);
				return why;
			}
	return NULL;
}

static void __attribute__((noreturn)) loop(void)
{
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

static int __attribute__((noinline)) recurse(int d)
{
	volatile unsigned char local[1024];
	for (int i = 0; i < 1024; i++)
		local[i] = (unsigned char)(d * 7 + i);
	frames[d] = (unsigned char *)local;
	if (d + 1 < DEPTH)
		return recurse(d + 1) + local[5];
	loop();
	return 0;
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	struct rlimit rl;
	getrlimit(RLIMIT_STACK, &rl);
	if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < 8 * 1024 * 1024)
		fr_die("RLIMIT_STACK below 8 MiB");
	return recurse(0);
}
