/* umask 027: read back (umask twice) and a new file gets mode 0640.
 * compat-object: umask
 */
#include "common.h"

static const char *check(void)
{
	mode_t m = umask(0);
	umask(m);
	if (m != 027)
		return "umask differs";
	char path[4096];
	snprintf(path, sizeof(path), "%s/umask-probe", fr_dir);
	unlink(path);
	int fd = open(path, O_CREAT | O_WRONLY, 0666);
	struct stat st;
	fstat(fd, &st);
	close(fd);
	unlink(path);
	if ((st.st_mode & 0777) != 0640)
		return "a new file does not get mode 0640";
	return NULL;
}

static void setup(void)
{
	umask(027);
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
