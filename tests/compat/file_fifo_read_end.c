/* Only the read end of a named FIFO (O_RDONLY|O_NONBLOCK), no writer anywhere: read gives 0
 * (end of file) with nothing queued, and a writer that opens later is seen by it.
 * compat-object: FIFO, read end only, no writer
 */
#include "common.h"

static int r;
static char path[4096];

static void check(void)
{
	char b[16];
	ssize_t n = read(r, b, sizeof(b));
	if (n != 0) {
		fr_status("BAD read gave %zd (%s), want 0 (no writer)", n, n < 0 ? strerror(errno) : "data");
		return;
	}
	int w = open(path, O_WRONLY | O_NONBLOCK);
	if (w < 0) {
		fr_status("BAD opening a writer: %s (the read end is not on this FIFO)", strerror(errno));
		return;
	}
	if (write(w, "hi", 2) != 2 || read(r, b, sizeof(b)) != 2 || memcmp(b, "hi", 2)) {
		fr_status("BAD bytes written by a new writer not read");
		close(w);
		return;
	}
	close(w);
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	snprintf(path, sizeof(path), "%s/fifo", fr_dir);
	if (mkfifo(path, 0600))
		fr_die("mkfifo");
	r = open(path, O_RDONLY | O_NONBLOCK);
	if (r < 0)
		fr_die("open");
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
