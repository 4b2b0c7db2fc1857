/* fanotify (FAN_CLASS_NOTIF) with an inode mark for FAN_CLOSE_WRITE on a file of the state dir:
 * closing the file after a write gives an event whose fd refers to the file; the group's
 * status flags (F_GETFL) and its fdinfo lines (init flags, event flags, the mark) are as they
 * were.
 * compat-object: fanotify group with an inode mark
 */
#include "common.h"

#include "fanotify_common.h"
#include <sys/fanotify.h>

static int fan;
static ino_t want_ino;
static int want_fl;
static char want_info[4096];

static void check(void)
{
	char info[4096];
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
	struct stat st;
	int ok = (m->mask & FAN_CLOSE_WRITE) && m->fd >= 0 && !fstat(m->fd, &st) && st.st_ino == want_ino &&
		 m->pid == getpid();
	if (m->fd >= 0)
		close(m->fd);
	while (read(fan, buf, sizeof(buf)) > 0)
		;
	if (!ok) {
		fr_status("BAD event mask %llx pid %d", (unsigned long long)m->mask, m->pid);
		return;
	}
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	close(fr_open_in_dir("marked", O_WRONLY | O_CREAT, 0644));
	fan = fanotify_init(FAN_CLASS_NOTIF | FAN_NONBLOCK, O_RDONLY);
	if (fan < 0)
		fr_die("fanotify_init");
	char p[4096];
	snprintf(p, sizeof(p), "%s/marked", fr_dir);
	if (fanotify_mark(fan, FAN_MARK_ADD, FAN_CLOSE_WRITE, AT_FDCWD, p))
		fr_die("fanotify_mark");
	struct stat st;
	stat(p, &st);
	want_ino = st.st_ino;
	want_fl = fcntl(fan, F_GETFL);
	fan_fdinfo(fan, want_info, sizeof(want_info));
	if (!strstr(want_info, "fanotify flags:") || !strstr(want_info, "fanotify ino:"))
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
