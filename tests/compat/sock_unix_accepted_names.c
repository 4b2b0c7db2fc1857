/* A Unix stream connection made through a named listener, both ends in the process, bytes
 * queued each way: the accepted end's getsockname is the listener's path, the client's
 * getpeername is that path too; the bytes come through.
 * compat-object: Unix stream connection via a named listener (names of both ends)
 */
#include "common.h"

#include <sys/socket.h>
#include <sys/un.h>

static int l, c, s;
static char path[108];
static int checks;

static void check(void)
{
	struct sockaddr_un a;
	socklen_t len = sizeof(a);
	memset(&a, 0, sizeof(a));
	if (getsockname(s, (struct sockaddr *)&a, &len) || strcmp(a.sun_path, path)) {
		fr_status("BAD accepted end's name '%s', want '%s'", a.sun_path, path);
		return;
	}
	len = sizeof(a);
	memset(&a, 0, sizeof(a));
	if (getpeername(c, (struct sockaddr *)&a, &len) || strcmp(a.sun_path, path)) {
		fr_status("BAD client's peer name '%s', want '%s'", a.sun_path, path);
		return;
	}
	char b[16];
	const char *w1 = checks ? "c2s" : "client-bytes", *w2 = checks ? "s2c" : "server-bytes";
	ssize_t n1 = recv(s, b, sizeof(b), MSG_DONTWAIT);
	if (n1 != (ssize_t)strlen(w1) || memcmp(b, w1, (size_t)n1)) {
		fr_status("BAD server got %zd bytes", n1);
		return;
	}
	ssize_t n2 = recv(c, b, sizeof(b), MSG_DONTWAIT);
	if (n2 != (ssize_t)strlen(w2) || memcmp(b, w2, (size_t)n2)) {
		fr_status("BAD client got %zd bytes", n2);
		return;
	}
	if (send(c, "c2s", 3, 0) != 3 || send(s, "s2c", 3, 0) != 3)
		fr_die("send");
	checks++;
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	l = socket(AF_UNIX, SOCK_STREAM, 0);
	c = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	snprintf(a.sun_path, sizeof(a.sun_path), "%s/srv.sock", fr_dir);
	strcpy(path, a.sun_path);
	if (bind(l, (struct sockaddr *)&a, sizeof(a)) || listen(l, 2) || connect(c, (struct sockaddr *)&a, sizeof(a)))
		fr_die("connect");
	s = accept(l, NULL, NULL);
	if (s < 0 || send(c, "client-bytes", 12, 0) != 12 || send(s, "server-bytes", 12, 0) != 12)
		fr_die("accept");
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
