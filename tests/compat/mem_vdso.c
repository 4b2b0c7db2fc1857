/* The vDSO: AT_SYSINFO_EHDR still points at the [vdso] area, it is still an ELF image, and the
 * vDSO clock_gettime/gettimeofday/time agree with the system calls.
 * compat-object: vDSO (clock_gettime through it)
 */
#include "common.h"

#include <sys/auxv.h>
#include <sys/syscall.h>
#include <sys/time.h>

static const char *check(void)
{
	static char why[256];
	unsigned long eh = getauxval(AT_SYSINFO_EHDR);
	char line[512];
	unsigned long s = 0, e = 0, vs = 0;
	FILE *f = fopen("/proc/self/maps", "r");
	while (f && fgets(line, sizeof(line), f))
		if (strstr(line, "[vdso]") && sscanf(line, "%lx-%lx", &s, &e) == 2)
			vs = s;
	if (f)
		fclose(f);
	if (!vs || vs != eh) {
		snprintf(why, sizeof(why), "[vdso] at %lx, AT_SYSINFO_EHDR %lx", vs, eh);
		return why;
	}
	if (memcmp((void *)eh, "\177ELF", 4))
		return "no ELF image at AT_SYSINFO_EHDR";
	clockid_t clocks[] = {CLOCK_MONOTONIC, CLOCK_REALTIME, CLOCK_BOOTTIME, CLOCK_MONOTONIC_COARSE};
	for (unsigned i = 0; i < 4; i++) {
		struct timespec a, b, c;
		syscall(SYS_clock_gettime, clocks[i], &a);
		clock_gettime(clocks[i], &b);
		syscall(SYS_clock_gettime, clocks[i], &c);
		double ta = a.tv_sec + a.tv_nsec / 1e9, tb = b.tv_sec + b.tv_nsec / 1e9,
		       tc = c.tv_sec + c.tv_nsec / 1e9;
		if (tb < ta - 0.02 || tb > tc + 0.02) {
			snprintf(why, sizeof(why), "clock %d: vDSO %.6f not between syscalls %.6f and %.6f",
				 clocks[i], tb, ta, tc);
			return why;
		}
	}
	struct timeval tv;
	gettimeofday(&tv, NULL);
	if (labs(tv.tv_sec - time(NULL)) > 1)
		return "gettimeofday and time disagree";
	return NULL;
}

static void setup(void)
{
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
