/* memfd with F_SEAL_SHRINK|F_SEAL_GROW|F_SEAL_WRITE|F_SEAL_SEAL (MFD_ALLOW_SEALING|MFD_CLOEXEC):
 * the seals, the size, the contents, and that writes/truncates/new seals are refused.
 * compat-object: memfd with seals
 */
#include "common.h"

#include <sys/mman.h>

static int fd;

static const char *check(void)
{
	static char why[128];
	int seals = fcntl(fd, F_GET_SEALS);
	int want = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL;
	if (seals != want) {
		snprintf(why, sizeof(why), "seals %#x want %#x", seals, want);
		return why;
	}
	struct stat st;
	if (fstat(fd, &st) || st.st_size != 10000)
		return "size differs";
	char buf[10000];
	if (pread(fd, buf, sizeof(buf), 0) != 10000)
		return "pread";
	for (int i = 0; i < 10000; i++)
		if (buf[i] != (char)(i % 251))
			return "contents differ";
	if (pwrite(fd, "x", 1, 0) != -1 || errno != EPERM)
		return "a write is allowed";
	if (ftruncate(fd, 5000) != -1 || errno != EPERM)
		return "shrinking is allowed";
	if (fcntl(fd, F_ADD_SEALS, F_SEAL_FUTURE_WRITE) != -1)
		return "adding a seal is allowed";
	if (!(fcntl(fd, F_GETFD) & FD_CLOEXEC))
		return "FD_CLOEXEC lost";
	return NULL;
}

static void setup(void)
{
	fd = memfd_create("compat-sealed", MFD_ALLOW_SEALING | MFD_CLOEXEC);
	if (fd < 0)
		fr_die("memfd_create");
	char buf[10000];
	for (int i = 0; i < 10000; i++)
		buf[i] = (char)(i % 251);
	if (write(fd, buf, sizeof(buf)) != sizeof(buf))
		fr_die("write");
	if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL))
		fr_die("F_ADD_SEALS");
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
