/* POSIX record locks (F_SETLK): a write lock on [100,200) and a read lock on [500,EOF).
 * Checked with F_OFD_GETLK through another open file description (OFD locks conflict with the
 * process's POSIX locks): the ranges, types and owner pid.
 * compat-object: POSIX record locks (fcntl F_SETLK)
 */
#include "common.h"

static int fd, o;

/* o stays open: closing any descriptor of the file would drop the process's POSIX locks. */
static int probe(short type, off_t start, off_t len, struct flock *out)
{
	struct flock fl = {.l_type = type, .l_whence = SEEK_SET, .l_start = start, .l_len = len};
	int r = fcntl(o, F_OFD_GETLK, &fl);
	*out = fl;
	return r;
}

static void check(void)
{
	struct flock fl;
	if (probe(F_RDLCK, 150, 1, &fl) || fl.l_type != F_WRLCK || fl.l_start != 100 || fl.l_len != 100 ||
	    fl.l_pid != getpid()) {
		fr_status("BAD write lock [100,200): type %d start %lld len %lld pid %d", fl.l_type,
			  (long long)fl.l_start, (long long)fl.l_len, fl.l_pid);
		return;
	}
	if (probe(F_RDLCK, 600, 1, &fl) || fl.l_type != F_UNLCK) {
		fr_status("BAD a reader conflicts at 600: the read lock came back as a write lock");
		return;
	}
	if (probe(F_WRLCK, 10000, 1, &fl) || fl.l_type != F_RDLCK || fl.l_start != 500 || fl.l_len != 0) {
		fr_status("BAD read lock [500,EOF): type %d start %lld len %lld", fl.l_type,
			  (long long)fl.l_start, (long long)fl.l_len);
		return;
	}
	if (probe(F_WRLCK, 300, 100, &fl) || fl.l_type != F_UNLCK) {
		fr_status("BAD [300,400) is locked (type %d)", fl.l_type);
		return;
	}
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	fd = fr_open_in_dir("locked", O_RDWR | O_CREAT, 0644);
	o = fr_open_in_dir("locked", O_RDWR, 0);
	struct flock w = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 100, .l_len = 100};
	struct flock r = {.l_type = F_RDLCK, .l_whence = SEEK_SET, .l_start = 500, .l_len = 0};
	if (fcntl(fd, F_SETLK, &w) || fcntl(fd, F_SETLK, &r))
		fr_die("F_SETLK");
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
