/* Character devices: /dev/null (write-only), /dev/zero (read, offset), /dev/urandom (read):
 * same device numbers and they still behave as those devices.
 * compat-object: /dev/null, /dev/zero, /dev/urandom descriptors
 */
#include "common.h"

#include <sys/sysmacros.h>

static int dnull, dzero, drand;

static int is(int fd, int maj, int min)
{
	struct stat st;
	return !fstat(fd, &st) && S_ISCHR(st.st_mode) && major(st.st_rdev) == (unsigned)maj &&
	       minor(st.st_rdev) == (unsigned)min;
}

static void check(void)
{
	if (!is(dnull, 1, 3) || !is(dzero, 1, 5) || !is(drand, 1, 9)) {
		fr_status("BAD device numbers differ");
		return;
	}
	if ((fcntl(dnull, F_GETFL) & O_ACCMODE) != O_WRONLY || (fcntl(dzero, F_GETFL) & O_ACCMODE) != O_RDWR) {
		fr_status("BAD access modes");
		return;
	}
	char b[16];
	memset(b, 1, sizeof(b));
	if (write(dnull, "x", 1) != 1 || read(dzero, b, 16) != 16 || b[7] || read(drand, b, 16) != 16) {
		fr_status("BAD device I/O");
		return;
	}
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	dnull = open("/dev/null", O_WRONLY);
	dzero = open("/dev/zero", O_RDWR);
	drand = open("/dev/urandom", O_RDONLY | O_NONBLOCK);
	if (dnull < 0 || dzero < 0 || drand < 0)
		fr_die("open");
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
