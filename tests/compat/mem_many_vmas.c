/* 600 separate small anonymous mappings (alternating protections so they cannot merge), each with
 * its own bytes: all come back at the same addresses with the same protections and bytes.
 * compat-object: many small VMAs
 */
#include "common.h"

#include <sys/mman.h>

#define N 600
#define PS 4096ul
static unsigned char *base;

static const char *check(void)
{
	static char why[128];
	for (int i = 0; i < N; i++) {
		unsigned char *p = base + (unsigned long)i * 2 * PS;
		if (p[0] != (unsigned char)i || p[PS - 1] != (unsigned char)(i >> 8)) {
			snprintf(why, sizeof(why), "mapping %d bytes differ", i);
			return why;
		}
		unsigned char v;
		if (mincore(p + PS, PS, &v) != -1 || errno != ENOMEM) {
			snprintf(why, sizeof(why), "gap after mapping %d is mapped", i);
			return why;
		}
	}
	int n = 0;
	char line[512];
	FILE *f = fopen("/proc/self/maps", "r");
	while (f && fgets(line, sizeof(line), f)) {
		unsigned long s;
		if (sscanf(line, "%lx-", &s) == 1 && s >= (unsigned long)base &&
		    s < (unsigned long)base + 2 * N * PS)
			n++;
	}
	if (f)
		fclose(f);
	if (n != N) {
		snprintf(why, sizeof(why), "%d areas in the range, want %d", n, N);
		return why;
	}
	return NULL;
}

static void setup(void)
{
	base = mmap(NULL, 2 * N * PS, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (base == MAP_FAILED)
		fr_die("mmap");
	munmap(base, 2 * N * PS);
	for (int i = 0; i < N; i++) {
		unsigned char *p = base + (unsigned long)i * 2 * PS;
		if (mmap(p, PS, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0) != p)
			fr_die("mmap fixed");
		p[0] = (unsigned char)i;
		p[PS - 1] = (unsigned char)(i >> 8);
		if (i % 2)
			mprotect(p, PS, PROT_READ);
	}
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
