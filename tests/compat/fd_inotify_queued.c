/* inotify with events queued and unread at the dump (a file created in the watched directory).
 * A new inotify instance cannot be given events: refusing is the honest outcome.
 * compat-object: inotify with unread events
 * compat-refuse: inotify
 */
#include "common.h"

#include <sys/inotify.h>

static int in, wd;

static void check(void)
{
	char buf[4096];
	ssize_t len = read(in, buf, sizeof(buf));
	if (len <= 0) {
		fr_status("BAD no queued event");
		return;
	}
	struct inotify_event *e = (struct inotify_event *)buf;
	if (e->wd != wd || !(e->mask & IN_CREATE) || strcmp(e->name, "queued")) {
		fr_status("BAD event wd %d mask %x name %s", e->wd, e->mask, e->len ? e->name : "");
		return;
	}
	/* Put one back for the next check. */
	char p[4096];
	snprintf(p, sizeof(p), "%s/dir/queued", fr_dir);
	unlink(p);
	read(in, buf, sizeof(buf));
	close(fr_open_in_dir("dir/queued", O_WRONLY | O_CREAT, 0644));
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	char p[4096];
	snprintf(p, sizeof(p), "%s/dir", fr_dir);
	mkdir(p, 0755);
	in = inotify_init1(IN_NONBLOCK);
	wd = inotify_add_watch(in, p, IN_CREATE);
	if (in < 0 || wd < 0)
		fr_die("inotify");
	close(fr_open_in_dir("dir/queued", O_WRONLY | O_CREAT, 0644));
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
