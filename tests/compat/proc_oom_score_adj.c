/* /proc/self/oom_score_adj set to 321: read back.
 * compat-object: oom_score_adj
 */
#include "common.h"

static const char *check(void)
{
	char b[32] = "";
	int fd = open("/proc/self/oom_score_adj", O_RDONLY);
	read(fd, b, sizeof(b) - 1);
	close(fd);
	if (atoi(b) != 321)
		return "oom_score_adj is not 321";
	return NULL;
}

static void setup(void)
{
	int fd = open("/proc/self/oom_score_adj", O_WRONLY);
	if (fd < 0 || write(fd, "321", 3) != 3)
		fr_die("oom_score_adj");
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
