/* personality(PER_LINUX | ADDR_NO_RANDOMIZE | READ_IMPLIES_EXEC | ADDR_COMPAT_LAYOUT) set while
 * running: personality(0xffffffff) reads it back.
 * compat-object: personality flags
 */
#include "common.h"

#include <sys/personality.h>

static const unsigned long want = PER_LINUX | ADDR_NO_RANDOMIZE | READ_IMPLIES_EXEC | ADDR_COMPAT_LAYOUT;

static const char *check(void)
{
	static char why[64];
	int p = personality(0xffffffff);
	if ((unsigned long)p != want) {
		snprintf(why, sizeof(why), "personality %#x want %#lx", p, want);
		return why;
	}
	return NULL;
}

static void setup(void)
{
	if (personality(want) < 0)
		fr_die("personality");
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
