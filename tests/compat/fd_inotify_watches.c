/* inotify with watches on a file and a directory (one removed before, leaving a gap in the
 * watch numbers): after the check's changes, the events come with the original watch numbers.
 * compat-object: inotify watches (numbers, masks), no queued events
 */
#include "common.h"

#include <sys/inotify.h>

static int in, wfile, wdir;
static int n;

static void check(void)
{
	char name[64];
	snprintf(name, sizeof(name), "dir/new%d", ++n);
	close(fr_open_in_dir(name, O_WRONLY | O_CREAT, 0644));
	int f = fr_open_in_dir("file", O_WRONLY, 0);
	if (write(f, "x", 1) != 1)
		fr_die("write");
	close(f);
	usleep(50000);
	char buf[4096];
	ssize_t len = read(in, buf, sizeof(buf));
	int saw_create = 0, saw_modify = 0, other = 0;
	for (ssize_t off = 0; off < len;) {
		struct inotify_event *e = (struct inotify_event *)(buf + off);
		if (e->wd == wdir && (e->mask & IN_CREATE) && !strcmp(e->name, name + 4))
			saw_create = 1;
		else if (e->wd == wfile && (e->mask & IN_MODIFY))
			saw_modify = 1;
		else
			other = e->wd * 1000 + (int)(e->mask & 0xfff);
		off += (ssize_t)sizeof(*e) + e->len;
	}
	if (!saw_create || !saw_modify || other) {
		fr_status("BAD events: create(wd %d)=%d modify(wd %d)=%d unexpected=%d", wdir, saw_create, wfile,
			  saw_modify, other);
		return;
	}
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	char p[4096];
	snprintf(p, sizeof(p), "%s/dir", fr_dir);
	mkdir(p, 0755);
	close(fr_open_in_dir("file", O_WRONLY | O_CREAT, 0644));
	close(fr_open_in_dir("other", O_WRONLY | O_CREAT, 0644));
	in = inotify_init1(IN_NONBLOCK);
	snprintf(p, sizeof(p), "%s/other", fr_dir);
	int gone = inotify_add_watch(in, p, IN_ALL_EVENTS);
	snprintf(p, sizeof(p), "%s/file", fr_dir);
	wfile = inotify_add_watch(in, p, IN_MODIFY);
	snprintf(p, sizeof(p), "%s/dir", fr_dir);
	wdir = inotify_add_watch(in, p, IN_CREATE | IN_DELETE);
	if (in < 0 || gone < 0 || wfile < 0 || wdir < 0)
		fr_die("inotify");
	inotify_rm_watch(in, gone);
	usleep(20000);
	char buf[4096];
	while (read(in, buf, sizeof(buf)) > 0)
		;
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
