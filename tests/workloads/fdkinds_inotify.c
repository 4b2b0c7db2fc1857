/* inotify: watches on STATE/watched (a directory) and STATE/watched-file; every event read is
 * reported as "event wd=W mask=M name=N". Each check reports:
 *   ok checks=N events=K
 * Modes (second argument):
 *   unread   events are never read (the queue is not empty at the dump: refused)
 *   gap      a third watch (on STATE/other) is added and the second removed: watch
 *            descriptors 1 and 3
 */
#include "common.h"

#include <sys/inotify.h>

static int in;
static int checks, events;

static void read_events(void)
{
	char buf[4096] __attribute__((aligned(8)));
	ssize_t n;
	while ((n = read(in, buf, sizeof(buf))) > 0) {
		for (char *p = buf; p < buf + n;) {
			struct inotify_event *e = (struct inotify_event *)p;
			events++;
			fr_status("event wd=%d mask=%x name=%s", e->wd, e->mask, e->len ? e->name : "-");
			p += sizeof(*e) + e->len;
		}
	}
	if (n < 0 && errno != EAGAIN)
		fr_die("read inotify");
}

static void check(void)
{
	int fl = fcntl(in, F_GETFL), fdfl = fcntl(in, F_GETFD);
	checks++;
	if (!(fl & O_NONBLOCK) || !(fdfl & FD_CLOEXEC))
		fr_status("BAD flags %o fd flags %o", fl, fdfl);
	else
		fr_status("ok checks=%d events=%d", checks, events);
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	const char *mode = argc > 2 ? argv[2] : "";
	char dir[4096], file[4096], other[4096];
	snprintf(dir, sizeof(dir), "%s/watched", fr_dir);
	snprintf(file, sizeof(file), "%s/watched-file", fr_dir);
	snprintf(other, sizeof(other), "%s/other", fr_dir);
	if (mkdir(dir, 0755) || mkdir(other, 0755))
		fr_die("mkdir");
	close(fr_open_in_dir("watched-file", O_WRONLY | O_CREAT, 0644));
	in = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (in < 0)
		fr_die("inotify_init1");
	int wd1 = inotify_add_watch(in, dir, IN_CREATE | IN_DELETE | IN_MOVED_TO);
	int wd2 = inotify_add_watch(in, file, IN_MODIFY | IN_CLOSE_WRITE);
	if (wd1 != 1 || wd2 != 2)
		fr_die("inotify_add_watch");
	if (!strcmp(mode, "gap")) {
		if (inotify_add_watch(in, other, IN_CREATE) != 3 || inotify_rm_watch(in, wd2))
			fr_die("gap");
		read_events(); /* the IN_IGNORED of the removed watch */
	}
	fr_status("fds in=%d fd=%d", in, in);
	fr_ready();
	for (unsigned long n = 1;; n++) {
		if (fr_usr1_pending) {
			fr_usr1_pending = 0;
			check();
		}
		if (strcmp(mode, "unread"))
			read_events();
		fr_log_tick(n);
		usleep(10000);
	}
}
