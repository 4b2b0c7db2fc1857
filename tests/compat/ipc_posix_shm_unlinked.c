/* POSIX shared memory (shm_open in /dev/shm, unlinked at once), mapped shared twice (two views of
 * one object) with the fd closed: the bytes, and a write through one view seen through the other.
 * compat-object: POSIX shm object (unlinked), mapped twice
 * compat-libs: -lrt
 */
#include "common.h"

#include <sys/mman.h>

static unsigned char *a, *b;

static const char *check(void)
{
	for (int i = 0; i < 8192; i += 7)
		if (i != 1 && b[i] != (unsigned char)(i * 9))
			return "bytes differ";
	a[1]++;
	if (b[1] != a[1])
		return "the two views are not one object";
	return NULL;
}

static void setup(void)
{
	char name[64];
	snprintf(name, sizeof(name), "/ferry-compat-%d", getpid());
	int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
	if (fd < 0)
		fr_die("shm_open");
	shm_unlink(name);
	ftruncate(fd, 8192);
	a = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	b = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	for (int i = 0; i < 8192; i += 7)
		a[i] = (unsigned char)(i * 9);
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
