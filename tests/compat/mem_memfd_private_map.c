/* memfd mapped MAP_PRIVATE with the fd closed: pages written through the mapping are private
 * (the memfd, reached through /proc/self/map_files, still has the old bytes); pages not written
 * still show the memfd's bytes, including a change made to it after the dump.
 * compat-object: memfd mapped private, fd closed
 */
#include "common.h"

#include <sys/mman.h>

#define PS 4096
static unsigned char *m;
static unsigned n;

static const char *check(void)
{
	static char why[256];
	char path[128];
	snprintf(path, sizeof(path), "/proc/self/map_files/%lx-%lx", (unsigned long)m,
		 (unsigned long)m + 4 * PS);
	int fd = open(path, O_RDWR);
	if (fd < 0) {
		snprintf(why, sizeof(why), "open %s: %s", path, strerror(errno));
		return why;
	}
	unsigned char c = 0;
	pread(fd, &c, 1, 0);
	if (c != 'A' || m[0] != 'P')
		return "written page: the memfd or the private copy differ";
	n++;
	c = (unsigned char)n;
	pwrite(fd, &c, 1, 2 * PS + 7);
	close(fd);
	if (m[2 * PS + 7] != c)
		return "an unwritten private page does not show the memfd's new byte";
	if (m[PS] != 'A' + 1)
		return "an unwritten page differs";
	return NULL;
}

static void setup(void)
{
	int fd = memfd_create("compat-private", 0);
	if (fd < 0 || ftruncate(fd, 4 * PS))
		fr_die("memfd");
	for (int p = 0; p < 4; p++) {
		unsigned char c = (unsigned char)('A' + p);
		pwrite(fd, &c, 1, p * PS);
	}
	m = mmap(NULL, 4 * PS, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	if (m == MAP_FAILED)
		fr_die("mmap");
	close(fd);
	m[0] = 'P';
	(void)m[PS];
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
