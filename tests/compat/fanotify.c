/* A fanotify group with a mark for FAN_OPEN on the state directory and its children: the
 * runner reading the status file queues events, so the dump refuses the unread events, named.
 * compat-object: fanotify group with a mark
 * compat-refuse: fanotify
 */
#include "common.h"
#include <sys/fanotify.h>

static int fan;

static void check(void)
{
	/* The group still reports an open of a file in the marked directory. */
	char p[4096], buf[4096];
	snprintf(p, sizeof(p), "%s/probe", fr_dir);
	int fd = open(p, O_RDONLY | O_CREAT, 0600);
	if (fd >= 0)
		close(fd);
	ssize_t n = read(fan, buf, sizeof(buf));
	struct fanotify_event_metadata *m = (void *)buf;
	if (n < (ssize_t)sizeof(*m) || m->vers != FANOTIFY_METADATA_VERSION || !(m->mask & FAN_OPEN)) {
		fr_status("BAD no FAN_OPEN event (%zd bytes)", n);
		return;
	}
	for (; FAN_EVENT_OK(m, n); m = FAN_EVENT_NEXT(m, n))
		if (m->fd >= 0)
			close(m->fd);
	while (read(fan, buf, sizeof(buf)) > 0)
		; /* the closes' events */
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	fan = fanotify_init(FAN_CLASS_NOTIF | FAN_NONBLOCK, O_RDONLY);
	if (fan < 0 || fanotify_mark(fan, FAN_MARK_ADD, FAN_OPEN | FAN_EVENT_ON_CHILD, AT_FDCWD, fr_dir))
		fr_die("fanotify");
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
