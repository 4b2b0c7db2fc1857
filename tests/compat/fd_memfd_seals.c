/* A memfd with contents, name and seals F_SEAL_SHRINK|F_SEAL_GROW|F_SEAL_SEAL: the seals hold
 * (ftruncate fails with EPERM, adding a seal fails), writing inside the size still works.
 * compat-object: memfd with seals (shrink, grow, seal)
 */
#include "common.h"

#include <sys/mman.h>

static int fd;

static void check(void)
{
	int s = fcntl(fd, F_GET_SEALS);
	if (s != (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)) {
		fr_status("BAD seals %x", s);
		return;
	}
	if (ftruncate(fd, 100) != -1 || errno != EPERM || fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE) != -1) {
		fr_status("BAD a seal did not hold");
		return;
	}
	struct stat st;
	fstat(fd, &st);
	char b[8];
	if (st.st_size != 65536 || pread(fd, b, 8, 40000) != 8 || memcmp(b, "memfdata", 8)) {
		fr_status("BAD size %lld or contents", (long long)st.st_size);
		return;
	}
	if (pwrite(fd, "memfdata", 8, 40000) != 8) {
		fr_status("BAD write in size: %s", strerror(errno));
		return;
	}
	char l[256];
	char p[64];
	snprintf(p, sizeof(p), "/proc/self/fd/%d", fd);
	ssize_t n = readlink(p, l, sizeof(l) - 1);
	l[n < 0 ? 0 : n] = 0;
	if (strcmp(l, "/memfd:sealed-one (deleted)")) {
		fr_status("BAD name '%s'", l);
		return;
	}
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	fd = memfd_create("sealed-one", MFD_ALLOW_SEALING);
	if (fd < 0 || ftruncate(fd, 65536) || pwrite(fd, "memfdata", 8, 40000) != 8 ||
	    fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL))
		fr_die("memfd");
	fr_ready();
	for (unsigned long tick = 1;; tick++) {
		if (fr_usr1_pending) {
			fr_usr1_pending = 0;
			check();
		}
		fr_log_tick(tick);
		usleep(10000);
	}
}
