/* A file in STATEDIR mapped MAP_SHARED: writes through the mapping reach the file, pwrites to the
 * file show in the mapping, and msync works.
 * compat-object: file mapped MAP_SHARED
 */
#include "common.h"

#include <sys/mman.h>

#define PS 4096
static unsigned char *m;
static int fd;
static unsigned n;

static const char *check(void)
{
	for (int i = 0; i < 4 * PS; i += 97)
		if (i != 5 && i != 4 * PS - 97 && m[i] != (unsigned char)(i % 199))
			return "mapping bytes differ";
	n++;
	m[5] = (unsigned char)n;
	if (msync(m, 4 * PS, MS_SYNC))
		return "msync";
	unsigned char c = 0;
	pread(fd, &c, 1, 5);
	if (c != (unsigned char)n)
		return "a write through the mapping does not reach the file";
	c = (unsigned char)(n + 1);
	pwrite(fd, &c, 1, 4 * PS - 97);
	if (m[4 * PS - 97] != c)
		return "a pwrite to the file is not seen in the mapping";
	return NULL;
}

static void setup(void)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/shared", fr_dir);
	fd = open(path, O_RDWR | O_CREAT, 0644);
	if (fd < 0 || ftruncate(fd, 4 * PS))
		fr_die("open");
	m = mmap(NULL, 4 * PS, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED)
		fr_die("mmap");
	for (int i = 0; i < 4 * PS; i += 97)
		m[i] = (unsigned char)(i % 199);
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
