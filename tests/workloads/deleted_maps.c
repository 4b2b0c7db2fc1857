/* deleted_maps STATEDIR [with-fd]
 *
 * Mappings of regular files deleted after mmap, their descriptors closed:
 *   - a file in STATEDIR (mode 0640, a known mtime) of 5 pages with a hole, mapped shared twice
 *     (two views of one object), then unlinked;
 *   - another file of 4 pages, mapped private and written in page 1 only (pages 0, 2, 3 are
 *     still the file's), then unlinked.
 * With "with-fd" the first file's descriptor stays open (fd=N reported), which the dump
 * refuses. SIGUSR1: "ok checks=N" when every byte is as expected, a write through one shared
 * view shows through the other, and the private pages are the file's or the written ones;
 * else "BAD ...".
 */
#include "common.h"
#include <sys/mman.h>
#include <sys/stat.h>

#define PG 4096
static unsigned char *a, *b, *p;

static unsigned char shared_byte(long i)
{
	long page = i / PG;
	return page == 2 ? 0 : (unsigned char)(i * 13 + page);
}

static unsigned char private_byte(long i)
{
	return i / PG == 1 ? (unsigned char)(i * 7 + 1) : (unsigned char)(i * 3 + 5);
}

static int make(const char *name, long pages, unsigned char (*byte)(long), int hole_page)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/%s", fr_dir, name);
	int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		fr_die("open");
	if (ftruncate(fd, pages * PG))
		fr_die("ftruncate");
	unsigned char buf[PG];
	for (long pg = 0; pg < pages; pg++) {
		if (pg == hole_page)
			continue;
		for (long j = 0; j < PG; j++)
			buf[j] = byte(pg * PG + j);
		if (pwrite(fd, buf, PG, pg * PG) != PG)
			fr_die("pwrite");
	}
	if (fchmod(fd, 0640))
		fr_die("fchmod");
	struct timespec t[2] = {{1700000000, 123456789}, {1700000000, 123456789}};
	if (futimens(fd, t))
		fr_die("futimens");
	return fd;
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	int keep_fd = argc > 2 && !strcmp(argv[2], "with-fd");
	int fd = make("shared.bin", 5, shared_byte, 2);
	a = mmap(NULL, 5 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	b = mmap(NULL, 5 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (a == MAP_FAILED || b == MAP_FAILED)
		fr_die("mmap shared");
	char path[512];
	snprintf(path, sizeof(path), "%s/shared.bin", fr_dir);
	unlink(path);
	if (keep_fd)
		fr_status("fd=%d", fd);
	else
		close(fd);
	int pfd = make("private.bin", 4, private_byte, -1);
	/* The file holds the "unwritten" pattern everywhere; page 1 is then written privately. */
	for (long i = PG; i < 2 * PG; i++) {
		unsigned char c = (unsigned char)(i * 3 + 5);
		if (pwrite(pfd, &c, 1, i) != 1)
			fr_die("pwrite");
	}
	p = mmap(NULL, 4 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE, pfd, 0);
	if (p == MAP_FAILED)
		fr_die("mmap private");
	for (long i = PG; i < 2 * PG; i++)
		p[i] = private_byte(i);
	snprintf(path, sizeof(path), "%s/private.bin", fr_dir);
	unlink(path);
	close(pfd);
	fr_ready();
	long checks = 0;
	for (unsigned long tick = 1;; tick++) {
		fr_log_tick(tick);
		usleep(20000);
		if (!fr_usr1_pending)
			continue;
		fr_usr1_pending = 0;
		char bad[128] = "";
		for (long i = 0; i < 5 * PG && !bad[0]; i++)
			if (i != 5 && b[i] != shared_byte(i))
				snprintf(bad, sizeof(bad), "shared byte %ld is %d, want %d", i, b[i],
					 shared_byte(i));
		for (long i = 0; i < 4 * PG && !bad[0]; i++)
			if (p[i] != private_byte(i))
				snprintf(bad, sizeof(bad), "private byte %ld is %d, want %d", i, p[i],
					 private_byte(i));
		a[5]++;
		if (!bad[0] && b[5] != a[5])
			snprintf(bad, sizeof(bad), "the two shared views are not one object");
		if (bad[0]) {
			fr_status("BAD %s", bad);
		} else {
			checks++;
			fr_status("ok checks=%ld", checks);
		}
	}
}
