/* Open file description locks (F_OFD_SETLK): a write lock on [0,10) held by one description;
 * another description sees the conflict (l_pid -1) and cannot take it.
 * compat-object: OFD locks (fcntl F_OFD_SETLK)
 */
#include "common.h"

static int fd;

static void check(void)
{
	int o = fr_open_in_dir("locked", O_RDWR, 0);
	struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 5, .l_len = 1};
	int r = fcntl(o, F_OFD_GETLK, &fl);
	struct flock t = {.l_type = F_RDLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 1};
	int r2 = fcntl(o, F_OFD_SETLK, &t), e2 = errno;
	close(o);
	if (r || fl.l_type != F_WRLCK || fl.l_start != 0 || fl.l_len != 10 || fl.l_pid != -1) {
		fr_status("BAD OFD lock: type %d start %lld len %lld pid %d", fl.l_type, (long long)fl.l_start,
			  (long long)fl.l_len, fl.l_pid);
		return;
	}
	if (r2 == 0 || e2 != EAGAIN) {
		fr_status("BAD another description took a conflicting lock");
		return;
	}
	/* The holder's own description can still change it (it is its lock). */
	struct flock own = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 10};
	if (fcntl(fd, F_OFD_SETLK, &own)) {
		fr_status("BAD the holder cannot re-take its own lock: %s", strerror(errno));
		return;
	}
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	fd = fr_open_in_dir("locked", O_RDWR | O_CREAT, 0644);
	struct flock w = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 10};
	if (fcntl(fd, F_OFD_SETLK, &w))
		fr_die("F_OFD_SETLK");
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
