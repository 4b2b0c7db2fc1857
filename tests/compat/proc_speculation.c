/* Speculative store bypass disabled for the process (PR_SET_SPECULATION_CTRL PR_SPEC_DISABLE)
 * where the CPU lets the process control it: PR_GET_SPECULATION_CTRL reads it back.
 * compat-object: speculation control (PR_SPEC_STORE_BYPASS)
 */
#include "common.h"

#include <linux/prctl.h>
#include <sys/prctl.h>

static int want;

static const char *check(void)
{
	static char why[64];
	int s = prctl(PR_GET_SPECULATION_CTRL, PR_SPEC_STORE_BYPASS, 0, 0, 0);
	if (s != want) {
		snprintf(why, sizeof(why), "speculation control %#x want %#x", s, want);
		return why;
	}
	return NULL;
}

static void setup(void)
{
	int s = prctl(PR_GET_SPECULATION_CTRL, PR_SPEC_STORE_BYPASS, 0, 0, 0);
	if (s & PR_SPEC_PRCTL)
		prctl(PR_SET_SPECULATION_CTRL, PR_SPEC_STORE_BYPASS, PR_SPEC_DISABLE, 0, 0);
	want = prctl(PR_GET_SPECULATION_CTRL, PR_SPEC_STORE_BYPASS, 0, 0, 0);
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
