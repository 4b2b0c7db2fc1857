/* One 12-page anonymous area split by mprotect into r--, rw-, ---, r-x, rw-, -w- ... runs: every
 * piece keeps its protection (maps) and its bytes (readable pieces).
 * compat-object: mprotect splitting one area into pieces with different protections
 */
#include "common.h"

#include <sys/mman.h>

#define PS 4096ul
#define NP 12
static unsigned char *m;
static const int prot[NP] = {PROT_READ, PROT_READ, PROT_READ | PROT_WRITE, PROT_NONE,
			     PROT_READ | PROT_EXEC, PROT_READ | PROT_WRITE, PROT_WRITE, PROT_READ,
			     PROT_NONE, PROT_NONE, PROT_READ | PROT_WRITE | PROT_EXEC, PROT_READ};
static const char *perm[NP] = {"r--p", "r--p", "rw-p", "---p", "r-xp", "rw-p",
			       "-w-p", "r--p", "---p", "---p", "rwxp", "r--p"};

static const char *check(void)
{
	static char why[256];
	char line[512];
	for (unsigned long p = 0; p < NP; p++) {
		unsigned long a = (unsigned long)m + p * PS, s, e;
		char pm[8] = "";
		FILE *f = fopen("/proc/self/maps", "r");
		while (f && fgets(line, sizeof(line), f))
			if (sscanf(line, "%lx-%lx %7s", &s, &e, pm) == 3 && a >= s && a < e)
				break;
			else
				pm[0] = 0;
		if (f)
			fclose(f);
		if (strcmp(pm, perm[p])) {
			snprintf(why, sizeof(why), "page %lu is %s want %s", p, pm, perm[p]);
			return why;
		}
		if (prot[p] & PROT_READ)
			for (unsigned long i = 0; i < PS; i += 512)
				if (m[p * PS + i] != (unsigned char)(p * 17 + i / 512)) {
					snprintf(why, sizeof(why), "page %lu byte %lu differs", p, i);
					return why;
				}
	}
	return NULL;
}

static void setup(void)
{
	m = mmap(NULL, NP * PS, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED)
		fr_die("mmap");
	for (unsigned long p = 0; p < NP; p++)
		for (unsigned long i = 0; i < PS; i += 512)
			m[p * PS + i] = (unsigned char)(p * 17 + i / 512);
	for (unsigned long p = 0; p < NP; p++)
		if (mprotect(m + p * PS, PS, prot[p]))
			fr_die("mprotect");
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
