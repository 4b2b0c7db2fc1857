/* MADV_DONTNEED on written anonymous pages: they read zero and are absent; their neighbours keep
 * their bytes and stay present.
 * compat-object: pages dropped by madvise MADV_DONTNEED
 */
#include "common.h"

#include <sys/mman.h>

#define PS 4096ul
static unsigned char *m;

static const char *check(void)
{
	unsigned char v[8];
	if (mincore(m, 8 * PS, v))
		return "mincore";
	for (int p = 0; p < 8; p++) {
		int dropped = p >= 2 && p < 6;
		if ((v[p] & 1) == dropped)
			return dropped ? "a dropped page is present" : "a kept page is absent";
		if (m[p * PS + 1] != (dropped ? 0 : p + 1))
			return "bytes differ";
	}
	/* Reading a dropped page mapped the zero page there: drop it again for the next check. */
	if (madvise(m + 2 * PS, 4 * PS, MADV_DONTNEED))
		return "madvise";
	return NULL;
}

static void setup(void)
{
	m = mmap(NULL, 8 * PS, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	madvise(m, 8 * PS, MADV_NOHUGEPAGE);
	for (int p = 0; p < 8; p++)
		memset(m + p * PS, p + 1, PS);
	if (madvise(m + 2 * PS, 4 * PS, MADV_DONTNEED))
		fr_die("madvise");
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
