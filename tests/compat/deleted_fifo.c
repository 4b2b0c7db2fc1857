/* A FIFO deleted while open, its two ends open separately, with bytes queued.
 * compat-object: FIFO deleted while open (both ends, queued bytes)
 */
#include "common.h"
#include <sys/ioctl.h>

static int r, w;

static void check(void)
{
	struct stat a, b;
	if (fstat(r, &a) || fstat(w, &b) || !S_ISFIFO(a.st_mode) || a.st_ino != b.st_ino || a.st_nlink != 0 ||
	    (a.st_mode & 07777) != 0640) {
		fr_status("BAD stat: mode %o links %ld, ends on inodes %lu and %lu", a.st_mode, (long)a.st_nlink,
			  (unsigned long)a.st_ino, (unsigned long)b.st_ino);
		return;
	}
	int n = -1;
	char q[16] = {0};
	if (ioctl(r, FIONREAD, &n) || n != 6 || read(r, q, sizeof(q)) != 6 || memcmp(q, "queued", 6)) {
		fr_status("BAD queue: %d bytes", n);
		return;
	}
	if (write(w, q, 6) != 6) {
		fr_status("BAD write: %s", strerror(errno));
		return;
	}
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	char p[4096];
	snprintf(p, sizeof(p), "%s/fifo", fr_dir);
	if (mkfifo(p, 0640))
		fr_die("mkfifo");
	r = open(p, O_RDONLY | O_NONBLOCK);
	w = open(p, O_WRONLY | O_NONBLOCK);
	if (r < 0 || w < 0 || write(w, "queued", 6) != 6 || unlink(p))
		fr_die("fifo");
	fr_ready();
	for (unsigned long tick = 0;; tick++) {
		if (fr_usr1_pending) {
			fr_usr1_pending = 0;
			check();
		}
		fr_log_tick(tick);
		usleep(10000);
	}
}
