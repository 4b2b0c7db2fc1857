/* O_NONBLOCK on the read end of a pipe only; the write end blocking. A full pipe: a write on the
 * blocking end would block (checked with a 0-timeout poll), a read on the empty other pipe gives
 * EAGAIN.
 * compat-object: pipe ends with different O_NONBLOCK, a full pipe
 */
#include "common.h"

#include <poll.h>

static int p[2], full[2];

static void check(void)
{
	int fr = fcntl(p[0], F_GETFL), fw = fcntl(p[1], F_GETFL);
	if (!(fr & O_NONBLOCK) || (fw & O_NONBLOCK)) {
		fr_status("BAD flags read end %o write end %o", fr, fw);
		return;
	}
	char c;
	if (read(p[0], &c, 1) != -1 || errno != EAGAIN) {
		fr_status("BAD read on the empty non-blocking end did not give EAGAIN");
		return;
	}
	struct pollfd pf = {.fd = full[1], .events = POLLOUT};
	if (poll(&pf, 1, 0) != 0) {
		fr_status("BAD the full pipe is writable (revents %x): contents lost", pf.revents);
		return;
	}
	if (fcntl(full[1], F_GETPIPE_SZ) != 4096) {
		fr_status("BAD full pipe size %d", fcntl(full[1], F_GETPIPE_SZ));
		return;
	}
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	if (pipe(p) || pipe(full))
		fr_die("pipe");
	fcntl(p[0], F_SETFL, O_NONBLOCK);
	if (fcntl(full[1], F_SETPIPE_SZ, 4096) < 0)
		fr_die("setpipe");
	fcntl(full[1], F_SETFL, O_NONBLOCK);
	char buf[4096];
	memset(buf, 'f', sizeof(buf));
	if (write(full[1], buf, sizeof(buf)) != (ssize_t)sizeof(buf))
		fr_die("fill");
	fcntl(full[1], F_SETFL, 0);
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
