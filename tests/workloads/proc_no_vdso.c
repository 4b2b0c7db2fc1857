/* proc_no_vdso STATEDIR [all]
 *
 * Unmaps its [vdso] (with "all": the whole block, [vvar] and [vvar_vclock] too), then ticks
 * (never calling a vDSO function: glibc's cached pointers would now fault). On SIGUSR1 it
 * checks that /proc/self/maps still shows none of what it unmapped, that the old [vdso] page
 * is not mapped (mincore: ENOMEM), and that the clock still works by system call.
 * Reports "ok vdso=ADDR" or "BAD ...".
 */
#include "common.h"
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/syscall.h>

static int all;
static unsigned long vdso;

static int maps_has(const char *name)
{
	static char buf[1 << 16];
	int fd = open("/proc/self/maps", O_RDONLY);
	if (fd < 0)
		return -1;
	ssize_t n, total = 0;
	while ((n = read(fd, buf + total, sizeof(buf) - 1 - (size_t)total)) > 0)
		total += n;
	close(fd);
	buf[total] = 0;
	return strstr(buf, name) != NULL;
}

static void unmap_named(const char *name)
{
	char line[512];
	FILE *f = fopen("/proc/self/maps", "r");
	unsigned long ranges[8][2];
	int n = 0;
	if (!f)
		fr_die("maps");
	while (fgets(line, sizeof(line), f) && n < 8) {
		unsigned long s, e;
		if (strstr(line, name) && sscanf(line, "%lx-%lx", &s, &e) == 2) {
			ranges[n][0] = s;
			ranges[n][1] = e;
			n++;
		}
	}
	fclose(f);
	for (int i = 0; i < n; i++)
		if (munmap((void *)ranges[i][0], ranges[i][1] - ranges[i][0]))
			fr_die("munmap");
}

static void check(void)
{
	unsigned char vec;
	struct timespec ts;
	if (maps_has("[vdso]"))
		return fr_status("BAD [vdso] is mapped again");
	if (all && (maps_has("[vvar]") || maps_has("[vvar_vclock]")))
		return fr_status("BAD [vvar] is mapped again");
	if (!all && !maps_has("[vvar]"))
		return fr_status("BAD [vvar], which was kept, is gone");
	if (mincore((void *)vdso, 4096, &vec) == 0 || errno != ENOMEM)
		return fr_status("BAD the old [vdso] page at %#lx is mapped", vdso);
	if (syscall(SYS_clock_gettime, CLOCK_MONOTONIC, &ts))
		return fr_status("BAD clock_gettime: %s", strerror(errno));
	fr_status("ok vdso=%#lx", vdso);
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	all = argc > 2 && !strcmp(argv[2], "all");
	vdso = getauxval(AT_SYSINFO_EHDR);
	unmap_named("[vdso]");
	if (all) {
		unmap_named("[vvar]");
		unmap_named("[vvar_vclock]");
	}
	fr_ready();
	for (unsigned long tick = 0;; tick++) {
		if (fr_usr1_pending) {
			fr_usr1_pending = 0;
			check();
		}
		fr_log_tick(tick);
		usleep(10000);
	}
}
