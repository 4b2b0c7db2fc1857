/* A file under the state directory (a temporary directory) that only this process holds,
 * mapped MAP_SHARED and written all the time, like a JVM's perf-data file.
 * compat-object: private file mapped shared and kept written (hsperfdata-like)
 */
#include "common.h"
#include <sys/mman.h>

static volatile unsigned long *map;
static char path[4096];

static void check(void)
{
	unsigned long seen = 0;
	struct stat st;
	int fd = open(path, O_RDONLY);
	if (fd < 0 || fstat(fd, &st) || pread(fd, &seen, sizeof(seen), 0) != sizeof(seen)) {
		fr_status("BAD %s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return;
	}
	close(fd);
	if (seen != map[0] || map[1] != 0x1234567890abcdefUL || (st.st_mode & 07777) != 0604 || st.st_size != 32768) {
		fr_status("BAD file %lu mapped %lu magic %lx mode %o size %ld", seen, map[0], map[1], st.st_mode,
			  (long)st.st_size);
		return;
	}
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	snprintf(path, sizeof(path), "%s/perfdata", fr_dir);
	int fd = open(path, O_RDWR | O_CREAT | O_EXCL, 0604);
	if (fd < 0 || fchmod(fd, 0604) || ftruncate(fd, 32768))
		fr_die("create");
	map = mmap(NULL, 32768, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED)
		fr_die("mmap");
	close(fd);
	map[1] = 0x1234567890abcdefUL;
	fr_ready();
	for (unsigned long tick = 0;; tick++) {
		map[0] = tick;
		if (fr_usr1_pending) {
			fr_usr1_pending = 0;
			check();
		}
		fr_log_tick(tick);
		usleep(10000);
	}
}
