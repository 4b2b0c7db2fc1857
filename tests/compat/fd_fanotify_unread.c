/* A fanotify group with an event queued and not read: a restore cannot put it back into a new
 * group, so the dump must refuse, naming it. The check sees that the event still waits.
 * compat-object: fanotify group with unread events
 * compat-refuse: fanotify group with
 */
#include "common.h"

#include <sys/fanotify.h>
#include <sys/ioctl.h>

static int fan;

static void check(void)
{
	int n = 0;
	if (ioctl(fan, FIONREAD, &n) || n <= 0) {
		fr_status("BAD the queued event is gone (%d bytes)", n);
		return;
	}
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	fan = fanotify_init(FAN_CLASS_NOTIF | FAN_NONBLOCK, O_RDONLY);
	char p[4096];
	snprintf(p, sizeof(p), "%s/marked", fr_dir);
	close(fr_open_in_dir("marked", O_WRONLY | O_CREAT, 0644));
	if (fan < 0 || fanotify_mark(fan, FAN_MARK_ADD, FAN_CLOSE_WRITE, AT_FDCWD, p))
		fr_die("fanotify");
	close(fr_open_in_dir("marked", O_WRONLY, 0)); /* one FAN_CLOSE_WRITE, left unread */
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
