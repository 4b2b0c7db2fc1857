/* A fanotify group (unlimited queue and marks, O_NOATIME event descriptors) with an inode mark
 * whose ignored mask (FAN_MODIFY, surviving modification) hides part of its mask, an
 * ignore-only mark on the state directory (FAN_MARK_IGNORE), and a mount mark and a
 * filesystem mark on /dev/shm: every mark line of fdinfo and the status flags are as they
 * were, and the inode mark still reports FAN_CLOSE_WRITE without FAN_MODIFY.
 * compat-object: fanotify group with ignored masks, mount and filesystem marks
 */
#include "common.h"

#include "fanotify_common.h"
#include <sys/fanotify.h>

static int fan;
static int want_fl;
static char want_info[8192];

static void check(void)
{
	char info[8192];
	fan_fdinfo(fan, info, sizeof(info));
	if (strcmp(info, want_info)) {
		fr_status("BAD fdinfo now:\n%swant:\n%s", info, want_info);
		return;
	}
	if (fcntl(fan, F_GETFL) != want_fl) {
		fr_status("BAD F_GETFL %#x, want %#x", fcntl(fan, F_GETFL), want_fl);
		return;
	}
	int f = fr_open_in_dir("marked", O_WRONLY, 0);
	if (write(f, "x", 1) != 1)
		fr_die("write");
	close(f);
	usleep(50000);
	char buf[4096];
	ssize_t len = read(fan, buf, sizeof(buf));
	if (len < (ssize_t)sizeof(struct fanotify_event_metadata)) {
		fr_status("BAD no fanotify event (%zd: %s)", len, len < 0 ? strerror(errno) : "");
		return;
	}
	struct fanotify_event_metadata *m = (struct fanotify_event_metadata *)buf;
	unsigned long long mask = m->mask;
	int accmode = m->fd >= 0 ? fcntl(m->fd, F_GETFL) : -1;
	for (; FAN_EVENT_OK(m, len); m = FAN_EVENT_NEXT(m, len))
		if (m->fd >= 0)
			close(m->fd);
	while (read(fan, buf, sizeof(buf)) > 0)
		;
	if (mask != FAN_CLOSE_WRITE) {
		fr_status("BAD event mask %#llx, want FAN_CLOSE_WRITE alone", mask);
		return;
	}
	if (accmode < 0 || !(accmode & O_NOATIME)) {
		fr_status("BAD the event's descriptor has flags %#x, without O_NOATIME", accmode);
		return;
	}
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	close(fr_open_in_dir("marked", O_WRONLY | O_CREAT, 0644));
	fan = fanotify_init(FAN_CLASS_NOTIF | FAN_NONBLOCK | FAN_UNLIMITED_QUEUE | FAN_UNLIMITED_MARKS,
			    O_RDONLY | O_NOATIME);
	if (fan < 0)
		fr_die("fanotify_init");
	char p[4096];
	snprintf(p, sizeof(p), "%s/marked", fr_dir);
	if (fanotify_mark(fan, FAN_MARK_ADD, FAN_CLOSE_WRITE | FAN_MODIFY, AT_FDCWD, p) ||
	    fanotify_mark(fan, FAN_MARK_ADD | FAN_MARK_IGNORED_MASK | FAN_MARK_IGNORED_SURV_MODIFY, FAN_MODIFY,
			  AT_FDCWD, p))
		fr_die("inode mark");
	if (fanotify_mark(fan, FAN_MARK_ADD | FAN_MARK_IGNORE | FAN_MARK_IGNORED_SURV_MODIFY, FAN_OPEN | FAN_ONDIR,
			  AT_FDCWD, fr_dir))
		fr_die("ignore mark");
	/* Nothing executes from /dev/shm: these marks stay quiet. */
	if (fanotify_mark(fan, FAN_MARK_ADD | FAN_MARK_MOUNT, FAN_OPEN_EXEC, AT_FDCWD, "/dev/shm"))
		fr_die("mount mark");
	if (fanotify_mark(fan, FAN_MARK_ADD | FAN_MARK_FILESYSTEM, FAN_OPEN_EXEC, AT_FDCWD, "/dev/shm"))
		fr_die("filesystem mark");
	want_fl = fcntl(fan, F_GETFL);
	fan_fdinfo(fan, want_info, sizeof(want_info));
	if (!strstr(want_info, "mnt_id:") || !strstr(want_info, "ignored_mask:2 "))
		fr_die("fanotify fdinfo");
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
