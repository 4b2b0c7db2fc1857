/* An audit login uid set by the process (as a login service does for a session).
 * compat-object: audit loginuid
 */
#include "common.h"

static int read_id(const char *file)
{
	char buf[32] = {0};
	int fd = open(file, O_RDONLY);
	if (fd < 0)
		return -2;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	return n > 0 ? (int)strtoul(buf, NULL, 10) : -2;
}

static void check(void)
{
	int uid = read_id("/proc/self/loginuid");
	if (uid != 4242) {
		fr_status("BAD loginuid %d", uid);
		return;
	}
	fr_status("ok loginuid=%d", uid);
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	int fd = open("/proc/self/loginuid", O_WRONLY);
	if (fd < 0 || write(fd, "4242", 4) != 4)
		fr_die("set loginuid (needs root and audit)");
	close(fd);
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
