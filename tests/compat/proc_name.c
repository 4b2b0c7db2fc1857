/* Process name set with PR_SET_NAME ("ferry-nm-äb", 15 bytes): PR_GET_NAME and
 * /proc/self/comm read it back.
 * compat-object: process name (PR_SET_NAME)
 */
#include "common.h"

#include <sys/prctl.h>

static const char want[] = "fy-compat-nm\xc3\xa4z";

static const char *check(void)
{
	char n[32] = "", comm[64] = "";
	prctl(PR_GET_NAME, n, 0, 0, 0);
	if (strcmp(n, want))
		return "PR_GET_NAME differs";
	int fd = open("/proc/self/comm", O_RDONLY);
	ssize_t r = read(fd, comm, sizeof(comm) - 1);
	close(fd);
	if (r > 0 && comm[r - 1] == '\n')
		comm[r - 1] = 0;
	if (strcmp(comm, want))
		return "/proc/self/comm differs";
	return NULL;
}

static void setup(void)
{
	if (prctl(PR_SET_NAME, want, 0, 0, 0))
		fr_die("PR_SET_NAME");
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
