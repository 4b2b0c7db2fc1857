/* Status flags that change how a file is written: O_SYNC, O_DSYNC, O_NOATIME, each on its own
 * descriptor of one file, with their offsets.
 * compat-object: regular file status flags O_SYNC / O_DSYNC / O_NOATIME
 */
#include "common.h"

static int fsync_fd, fdsync_fd, fnoatime_fd;

static void check(void)
{
	int a = fcntl(fsync_fd, F_GETFL), b = fcntl(fdsync_fd, F_GETFL), c = fcntl(fnoatime_fd, F_GETFL);
	if ((a & O_SYNC) != O_SYNC) {
		fr_status("BAD O_SYNC lost: %o", a);
		return;
	}
	if (!(b & O_DSYNC) || (b & O_SYNC) == O_SYNC) {
		fr_status("BAD O_DSYNC fd flags %o", b);
		return;
	}
	if (!(c & O_NOATIME)) {
		fr_status("BAD O_NOATIME lost: %o", c);
		return;
	}
	if (lseek(fsync_fd, 0, SEEK_CUR) != 11 || lseek(fdsync_fd, 0, SEEK_CUR) != 22 ||
	    lseek(fnoatime_fd, 0, SEEK_CUR) != 33) {
		fr_status("BAD offsets");
		return;
	}
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	fr_write_data_file("data", 4096);
	fsync_fd = fr_open_in_dir("data", O_RDWR | O_SYNC, 0);
	fdsync_fd = fr_open_in_dir("data", O_WRONLY | O_DSYNC, 0);
	fnoatime_fd = fr_open_in_dir("data", O_RDONLY | O_NOATIME, 0);
	lseek(fsync_fd, 11, SEEK_SET);
	lseek(fdsync_fd, 22, SEEK_SET);
	lseek(fnoatime_fd, 33, SEEK_SET);
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
