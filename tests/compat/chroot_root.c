/* A process whose root is a directory other than / (chroot into its state directory).
 * compat-object: root directory other than / (chroot)
 */
#include "common.h"

static void check(void)
{
	struct stat st;
	/* The status and log files are open; inside the new root the state dir is "/". */
	if (stat("/status", &st) || !S_ISREG(st.st_mode)) {
		fr_status("BAD the root is not the state directory");
		return;
	}
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	if (chroot(fr_dir) || chdir("/"))
		fr_die("chroot");
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
