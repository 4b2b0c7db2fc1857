/* Descriptors made by dup, dup2 and F_DUPFD_CLOEXEC share one open file description: a read on
 * one moves the offset of all, a flag set on one shows on all; close-on-exec stays per fd.
 * compat-object: dup'd descriptors sharing one offset and status flags
 */
#include "common.h"

static int a, b, c, d;
static long pos = 777;

static void check(void)
{
	char bad[200] = "";
	if (lseek(a, 0, SEEK_CUR) != pos || lseek(b, 0, SEEK_CUR) != pos || lseek(c, 0, SEEK_CUR) != pos ||
	    lseek(d, 0, SEEK_CUR) != pos)
		snprintf(bad, sizeof(bad), "offsets differ from %ld", pos);
	unsigned char x;
	if (!bad[0] && (read(c, &x, 1) != 1 || x != fr_data_byte(pos)))
		snprintf(bad, sizeof(bad), "read through dup");
	pos++;
	if (!bad[0] && lseek(a, 0, SEEK_CUR) != pos)
		snprintf(bad, sizeof(bad), "read on dup did not move the original's offset (not shared)");
	if (!bad[0] && !(fcntl(d, F_GETFL) & O_NONBLOCK))
		snprintf(bad, sizeof(bad), "O_NONBLOCK set on one description not seen through another fd");
	if (!bad[0] && ((fcntl(a, F_GETFD) & FD_CLOEXEC) || (fcntl(b, F_GETFD) & FD_CLOEXEC) ||
			!(fcntl(c, F_GETFD) & FD_CLOEXEC) || (fcntl(d, F_GETFD) & FD_CLOEXEC)))
		snprintf(bad, sizeof(bad), "close-on-exec bits wrong");
	if (bad[0])
		fr_status("BAD %s", bad);
	else
		fr_status("ok pos=%ld", pos);
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	fr_write_data_file("data", 65536);
	a = fr_open_in_dir("data", O_RDONLY, 0);
	b = dup(a);
	c = fcntl(a, F_DUPFD_CLOEXEC, 40);
	d = dup2(a, 57);
	if (b < 0 || c < 0 || d < 0)
		fr_die("dup");
	lseek(b, pos, SEEK_SET);
	fcntl(b, F_SETFL, O_NONBLOCK);
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
