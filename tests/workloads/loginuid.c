/* loginuid STATEDIR clear|set
 *
 * Clears its audit login uid ("clear": writes 4294967295 to /proc/self/loginuid, which also
 * clears the audit session) or sets it to 1000 ("set": the kernel gives it a new audit
 * session), then ticks. On SIGUSR1 it checks that /proc/self/loginuid and sessionid still
 * read what they read once set up. Reports "ok loginuid=L sessionid=S".
 */
#include "common.h"

static long read_id(const char *file)
{
	char path[64], buf[32];
	snprintf(path, sizeof(path), "/proc/self/%s", file);
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = 0;
	return strtol(buf, NULL, 10);
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	const char *val = argc > 2 && strcmp(argv[2], "set") == 0 ? "1000" : "4294967295";
	int fd = open("/proc/self/loginuid", O_WRONLY);
	if (fd < 0 || write(fd, val, strlen(val)) != (ssize_t)strlen(val))
		fr_die("write /proc/self/loginuid");
	close(fd);
	long l0 = read_id("loginuid"), s0 = read_id("sessionid");
	fr_ready();
	for (unsigned long tick = 1;; tick++) {
		fr_log_tick(tick);
		usleep(20000);
		if (!fr_usr1_pending)
			continue;
		fr_usr1_pending = 0;
		long l = read_id("loginuid"), s = read_id("sessionid");
		if (l != l0 || s != s0)
			fr_status("BAD loginuid %ld sessionid %ld, was %ld %ld", l, s, l0, s0);
		else
			fr_status("ok loginuid=%ld sessionid=%ld", l, s);
	}
}
