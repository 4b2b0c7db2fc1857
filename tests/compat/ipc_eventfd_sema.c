/* An eventfd in semaphore mode (EFD_SEMAPHORE|EFD_NONBLOCK) with counter 3: fdinfo shows
 * eventfd-count 3, a read returns 1 (then written back), the flags are kept.
 * compat-object: eventfd in semaphore mode
 */
#include "common.h"

#include <sys/eventfd.h>

static int fd;

static const char *check(void)
{
	static char why[640];
	char p[64], b[512] = "";
	snprintf(p, sizeof(p), "/proc/self/fdinfo/%d", fd);
	int f = open(p, O_RDONLY);
	read(f, b, sizeof(b) - 1);
	close(f);
	char *c = strstr(b, "eventfd-count:");
	if (!c || strtoull(c + 14, NULL, 16) != 3) {
		snprintf(why, sizeof(why), "fdinfo: %s", b);
		return why;
	}
	if (!(fcntl(fd, F_GETFL) & O_NONBLOCK))
		return "O_NONBLOCK lost";
	uint64_t v = 0;
	if (read(fd, &v, 8) != 8 || v != 1)
		return "a read does not return 1 (not in semaphore mode)";
	v = 1;
	write(fd, &v, 8);
	return NULL;
}

static void setup(void)
{
	fd = eventfd(3, EFD_SEMAPHORE | EFD_NONBLOCK);
	if (fd < 0)
		fr_die("eventfd");
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
