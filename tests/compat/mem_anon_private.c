/* Anonymous private mapping with a pattern over 64 pages, some pages never touched.
 * compat-object: anonymous private mapping (contents, untouched pages absent)
 */
#include "common.h"

#include <sys/mman.h>

#define PS 4096ul
#define NP 64
static unsigned char *m;
static uint64_t sum;

static const char *check(void)
{
	static char why[256];
	unsigned char vec[NP];
	if (mincore(m, NP * PS, vec))
		return "mincore";
	for (unsigned long p = 0; p < NP; p++) {
		int want = p % 3 != 0;
		if ((vec[p] & 1) != want) {
			snprintf(why, sizeof(why), "page %lu resident=%d want %d", p, vec[p] & 1, want);
			return why;
		}
	}
	uint64_t s = 0;
	for (unsigned long p = 0; p < NP; p++)
		if (p % 3)
			s += fr_checksum(m + p * PS, PS) * (p + 1);
	if (s != sum)
		return "contents differ";
	return NULL;
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	m = mmap(NULL, NP * PS, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED)
		fr_die("mmap");
	madvise(m, NP * PS, MADV_NOHUGEPAGE);
	for (unsigned long p = 0; p < NP; p++)
		if (p % 3) {
			fr_fill(m + p * PS, PS, p * 77);
			sum += fr_checksum(m + p * PS, PS) * (p + 1);
		}
	fr_ready();
	for (unsigned long tick = 1;; tick++) {
		if (fr_usr1_pending) {
			fr_usr1_pending = 0;
			const char *why = getpid() != fr_pid0 ? "pid changed" : check();
			if (why)
				fr_status("BAD %s", why);
			else
				fr_status("ok pid=%d", (int)getpid());
		}
		fr_log_tick(tick);
		usleep(10000);
	}
}
