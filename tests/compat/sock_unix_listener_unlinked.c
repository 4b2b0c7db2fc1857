/* A Unix stream listener whose socket file was removed (unlink after bind): getsockname still
 * gives the path, no file is at the path (restore must not leave one behind), it keeps listening.
 * compat-object: Unix listener whose socket file was removed
 */
#include "common.h"

#include <sys/socket.h>
#include <sys/un.h>

static int l;
static struct sockaddr_un a;

static void check(void)
{
	struct sockaddr_un g;
	socklen_t len = sizeof(g);
	memset(&g, 0, sizeof(g));
	if (getsockname(l, (struct sockaddr *)&g, &len) || strcmp(g.sun_path, a.sun_path)) {
		fr_status("BAD name '%s' want '%s'", g.sun_path, a.sun_path);
		return;
	}
	struct stat st;
	if (lstat(a.sun_path, &st) == 0) {
		fr_status("BAD a file is at the removed socket's path");
		return;
	}
	int acc = 0;
	socklen_t ol = sizeof(acc);
	getsockopt(l, SOL_SOCKET, SO_ACCEPTCONN, &acc, &ol);
	if (!acc) {
		fr_status("BAD not listening");
		return;
	}
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	l = socket(AF_UNIX, SOCK_STREAM, 0);
	a.sun_family = AF_UNIX;
	snprintf(a.sun_path, sizeof(a.sun_path), "%s/gone.sock", fr_dir);
	if (bind(l, (struct sockaddr *)&a, sizeof(a)) || listen(l, 2) || unlink(a.sun_path))
		fr_die("setup");
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
