/* A pipe whose read end was closed: writing to the write end fails with EPIPE (SIGPIPE ignored).
 * compat-object: pipe write end whose reader is gone
 */
#include "common.h"

static int w;

static void check(void)
{
	ssize_t n = write(w, "x", 1);
	if (n != -1 || errno != EPIPE) {
		fr_status("BAD write gave %zd (%s), want EPIPE", n, n < 0 ? strerror(errno) : "ok");
		return;
	}
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	signal(SIGPIPE, SIG_IGN);
	int p[2];
	if (pipe(p))
		fr_die("pipe");
	close(p[0]);
	w = p[1];
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
