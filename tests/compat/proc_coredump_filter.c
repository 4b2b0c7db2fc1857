/* /proc/self/coredump_filter set to 0x7f: read back.
 * compat-object: coredump_filter
 */
#include "common.h"

static const char *check(void)
{
	char b[32] = "";
	int fd = open("/proc/self/coredump_filter", O_RDONLY);
	read(fd, b, sizeof(b) - 1);
	close(fd);
	if (strtoul(b, NULL, 16) != 0x7f)
		return "coredump_filter is not 0x7f";
	return NULL;
}

static void setup(void)
{
	int fd = open("/proc/self/coredump_filter", O_WRONLY);
	if (fd < 0 || write(fd, "0x7f", 4) != 4)
		fr_die("coredump_filter");
	close(fd);
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
