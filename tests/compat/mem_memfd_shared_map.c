/* memfd mapped MAP_SHARED (fd kept open): bytes written through the mapping are seen by pread
 * and bytes written with pwrite are seen through the mapping (one object, not a copy).
 * compat-object: memfd mapped shared
 */
#include "common.h"

#include <sys/mman.h>

#define SZ (16 * 4096)
static int fd;
static unsigned char *m;
static unsigned n;

static const char *check(void)
{
	for (int i = 0; i < SZ - 8; i += 4096)
		if (m[i] != (unsigned char)(i / 4096 + 1))
			return "mapping contents differ";
	n++;
	m[SZ - 1] = (unsigned char)n;
	unsigned char c = 0;
	if (pread(fd, &c, 1, SZ - 1) != 1 || c != (unsigned char)n)
		return "a write through the mapping is not seen by pread";
	c = (unsigned char)(n + 100);
	pwrite(fd, &c, 1, SZ - 2);
	if (m[SZ - 2] != c)
		return "a pwrite is not seen through the mapping";
	return NULL;
}

static void setup(void)
{
	fd = memfd_create("compat-shared", 0);
	if (fd < 0 || ftruncate(fd, SZ))
		fr_die("memfd");
	m = mmap(NULL, SZ, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED)
		fr_die("mmap");
	for (int i = 0; i < SZ - 8; i += 4096)
		m[i] = (unsigned char)(i / 4096 + 1);
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
