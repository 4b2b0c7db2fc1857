/* A 512 MiB anonymous private mapping, sparsely written (one page every 1 MiB), with three holes
 * punched by munmap: the areas come back with the same bounds, the holes stay unmapped, the
 * written pages keep their bytes and the untouched pages stay absent.
 * compat-object: large sparse anonymous mapping with munmap holes
 */
#include "common.h"

#include <sys/mman.h>

#define PS 4096ul
#define MB (1024ul * 1024)
#define SZ (512 * MB)
static unsigned char *m;

static int hole(unsigned long mb)
{
	return (mb >= 100 && mb < 101) || (mb >= 200 && mb < 260) || (mb >= 511);
}

static const char *check(void)
{
	static char why[256];
	unsigned char v;
	for (unsigned long mb = 0; mb < SZ / MB; mb++) {
		unsigned char *p = m + mb * MB;
		int r = mincore(p, PS, &v);
		if (hole(mb)) {
			if (r != -1 || errno != ENOMEM) {
				snprintf(why, sizeof(why), "hole at MiB %lu is mapped", mb);
				return why;
			}
			continue;
		}
		if (r) {
			snprintf(why, sizeof(why), "MiB %lu is unmapped", mb);
			return why;
		}
		if (!(v & 1) || p[0] != (unsigned char)(mb | 1) || p[PS - 1] != (unsigned char)~mb) {
			snprintf(why, sizeof(why), "page at MiB %lu lost (resident %d)", mb, v & 1);
			return why;
		}
		if (mincore(p + 64 * PS, PS, &v) || (v & 1)) {
			snprintf(why, sizeof(why), "untouched page at MiB %lu + 256 KiB is resident", mb);
			return why;
		}
	}
	return NULL;
}

static void setup(void)
{
	m = mmap(NULL, SZ, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (m == MAP_FAILED)
		fr_die("mmap");
	madvise(m, SZ, MADV_NOHUGEPAGE);
	for (unsigned long mb = 0; mb < SZ / MB; mb++) {
		m[mb * MB] = (unsigned char)(mb | 1);
		m[mb * MB + PS - 1] = (unsigned char)~mb;
	}
	munmap(m + 100 * MB, MB);
	munmap(m + 200 * MB, 60 * MB);
	munmap(m + 511 * MB, MB);
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
