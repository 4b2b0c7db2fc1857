/* A pipe whose write end was closed, with bytes still queued: the bytes, then end of file.
 * compat-object: pipe read end with queued bytes, writer closed
 */
#include "common.h"

static int r;
static int done;

static void check(void)
{
	char b[64];
	if (!done) {
		ssize_t n = read(r, b, sizeof(b));
		if (n != 9 || memcmp(b, "last-word", 9)) {
			fr_status("BAD read %zd, want 'last-word'", n);
			return;
		}
		done = 1;
	}
	ssize_t n = read(r, b, sizeof(b));
	if (n != 0) {
		fr_status("BAD read after the data gave %zd (%s), want end of file", n,
			  n < 0 ? strerror(errno) : "data");
		return;
	}
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	int p[2];
	if (pipe(p) || write(p[1], "last-word", 9) != 9)
		fr_die("pipe");
	close(p[1]);
	r = p[0];
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
