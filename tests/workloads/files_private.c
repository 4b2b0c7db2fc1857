/* A file only this process holds and keeps writing, like a JVM's perf-data file: a directory
 * "perf" (mode 0750) in the state directory with a file "data" (mode 0640, 64 KiB, a hole in
 * its middle), mapped MAP_SHARED; the main loop writes the tick counter into the mapping.
 *
 * SIGUSR1 checks the mapping's pattern and counter, that the file at its path is the mapped
 * one (the counter read through a fresh open equals the mapping's), its mode, size, and that
 * the hole is still a hole. The test removes "perf" between dump and restore.
 */
#include "common.h"
#include <sys/mman.h>

#define LEN (64 * 1024)

static volatile unsigned long *counter;
static unsigned char *map;
static char path[4096];

static unsigned char pat(long i) { return (unsigned char)((i * 13 + 5) & 0xff); }

static void check(void)
{
	for (long i = 64; i < 4096; i++)
		if (map[i] != pat(i)) {
			fr_status("BAD mapping byte %ld", i);
			return;
		}
	int fd = open(path, O_RDONLY);
	struct stat st;
	unsigned long seen = 0;
	if (fd < 0 || fstat(fd, &st)) {
		fr_status("BAD %s: %s", path, strerror(errno));
		return;
	}
	off_t hole = lseek(fd, 0, SEEK_HOLE);
	ssize_t n = pread(fd, &seen, sizeof(seen), 0);
	close(fd);
	if (n != sizeof(seen) || seen != *counter || (st.st_mode & 07777) != 0640 || st.st_size != LEN ||
	    hole != 4096) {
		fr_status("BAD file: counter %lu in the file, %lu mapped; mode %o size %ld hole at %ld", seen, *counter,
			  st.st_mode, (long)st.st_size, (long)hole);
		return;
	}
	char dir[4096];
	snprintf(dir, sizeof(dir), "%s/perf", fr_dir);
	if (stat(dir, &st) || (st.st_mode & 07777) != 0750) {
		fr_status("BAD directory mode %o", st.st_mode);
		return;
	}
	fr_status("ok pid=%d counter=%lu", (int)getpid(), *counter);
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	char dir[4096];
	snprintf(dir, sizeof(dir), "%s/perf", fr_dir);
	snprintf(path, sizeof(path), "%s/data", dir);
	if (mkdir(dir, 0700) || chmod(dir, 0750))
		fr_die("mkdir");
	int fd = open(path, O_RDWR | O_CREAT | O_EXCL, 0640);
	if (fd < 0 || ftruncate(fd, LEN))
		fr_die("create");
	map = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED)
		fr_die("mmap");
	close(fd);
	for (long i = 64; i < 4096; i++)
		map[i] = pat(i);
	map[LEN - 1] = 1;
	counter = (volatile unsigned long *)map;
	fr_ready();
	for (unsigned long tick = 0;; tick++) {
		*counter = tick;
		if (fr_usr1_pending) {
			fr_usr1_pending = 0;
			check();
		}
		fr_log_tick(tick);
		usleep(10000);
	}
}
