/* Working directory STATEDIR/sub dir/deeper (with a space): getcwd, and a relative open finds the
 * file placed there.
 * compat-object: current working directory
 */
#include "common.h"

static char want[4096];

static const char *check(void)
{
	char cwd[4096];
	if (!getcwd(cwd, sizeof(cwd)) || strcmp(cwd, want))
		return "getcwd differs";
	int fd = open("marker", O_RDONLY);
	char b[8] = "";
	if (fd < 0 || read(fd, b, 6) != 6 || memcmp(b, "marker", 6))
		return "relative open of marker failed";
	close(fd);
	return NULL;
}

static void setup(void)
{
	char d[4096];
	snprintf(d, sizeof(d), "%s/sub dir", fr_dir);
	mkdir(d, 0755);
	snprintf(d, sizeof(d), "%s/sub dir/deeper", fr_dir);
	mkdir(d, 0755);
	if (chdir(d))
		fr_die("chdir");
	getcwd(want, sizeof(want));
	int fd = open("marker", O_CREAT | O_WRONLY | O_TRUNC, 0644);
	write(fd, "marker", 6);
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
