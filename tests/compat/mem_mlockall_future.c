/* mlockall(MCL_FUTURE) alone: existing areas are not locked, every new mapping is (VmLck grows by
 * its size and it is populated).
 * compat-object: mlockall(MCL_FUTURE)
 */
#include "common.h"

#include <sys/mman.h>

static long vmlck(void)
{
	char buf[8192];
	int fd = open("/proc/self/status", O_RDONLY);
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	buf[n > 0 ? n : 0] = 0;
	char *p = strstr(buf, "VmLck:");
	return p ? strtol(p + 6, NULL, 10) : -1;
}

static long base;

static const char *check(void)
{
	static char why[128];
	long before = vmlck();
	if (before != base) {
		snprintf(why, sizeof(why), "VmLck %ld kB, was %ld kB", before, base);
		return why;
	}
	unsigned char *f = mmap(NULL, 16 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	long after = vmlck();
	unsigned char v[16];
	int res = !mincore(f, 16 * 4096, v) && (v[15] & 1);
	munmap(f, 16 * 4096);
	if (after != before + 64) {
		snprintf(why, sizeof(why), "a new 64 kB mapping is not locked (VmLck %ld -> %ld)", before, after);
		return why;
	}
	if (!res)
		return "a new mapping is not populated";
	return NULL;
}

static void setup(void)
{
	if (mlockall(MCL_FUTURE))
		fr_die("mlockall");
	base = vmlck();
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
