/* A file in STATEDIR mapped MAP_PRIVATE, some pages written (copy-on-write), fd closed: the written
 * pages keep the private bytes, the file keeps its own, and the unwritten pages still follow the
 * file (a pwrite to it shows through them).
 * compat-object: file mapped MAP_PRIVATE with written pages
 */
#include "common.h"

#include <sys/mman.h>

#define PS 4096
static unsigned char *m;
static int fd;
static unsigned n;

static const char *check(void)
{
	unsigned char c;
	for (int p = 0; p < 8; p++) {
		pread(fd, &c, 1, p * PS + 3);
		if (c != fr_data_byte(p * PS + 3))
			return "the file changed";
		unsigned char want = p % 2 ? (unsigned char)(0xa0 + p) : fr_data_byte(p * PS + 3);
		if (m[p * PS + 3] != want)
			return "mapping bytes differ";
	}
	n++;
	c = (unsigned char)n;
	pwrite(fd, &c, 1, 4 * PS + 100);
	int follows = m[4 * PS + 100] == c;
	c = fr_data_byte(4 * PS + 100);
	pwrite(fd, &c, 1, 4 * PS + 100);
	if (!follows)
		return "an unwritten page no longer follows the file (copied privately)";
	return NULL;
}

static void setup(void)
{
	fr_write_data_file("data", 8 * PS);
	char path[4096];
	snprintf(path, sizeof(path), "%s/data", fr_dir);
	int f = open(path, O_RDONLY);
	m = mmap(NULL, 8 * PS, PROT_READ | PROT_WRITE, MAP_PRIVATE, f, 0);
	if (m == MAP_FAILED)
		fr_die("mmap");
	close(f);
	fd = open(path, O_RDWR);
	for (int p = 1; p < 8; p += 2)
		m[p * PS + 3] = (unsigned char)(0xa0 + p);
	for (int p = 0; p < 8; p += 2)
		(void)*(volatile unsigned char *)&m[p * PS];
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
