/* A named FIFO with both ends open in the process and bytes queued in it.
 * compat-object: FIFO, both ends, with queued bytes
 */
#include "common.h"

static int r, w;
static int checks;

static void check(void)
{
	char b[64];
	const char *want = checks ? "again" : "queued-in-fifo";
	ssize_t n = read(r, b, sizeof(b));
	if (n != (ssize_t)strlen(want) || memcmp(b, want, (size_t)n)) {
		fr_status("BAD fifo read %zd bytes, want '%s'", n, want);
		return;
	}
	struct stat st;
	if (fstat(r, &st) || !S_ISFIFO(st.st_mode)) {
		fr_status("BAD not a fifo");
		return;
	}
	if (!(fcntl(r, F_GETFL) & O_NONBLOCK) || (fcntl(w, F_GETFL) & O_NONBLOCK)) {
		fr_status("BAD status flags r=%o w=%o", fcntl(r, F_GETFL), fcntl(w, F_GETFL));
		return;
	}
	if (write(w, "again", 5) != 5) {
		fr_status("BAD write");
		return;
	}
	checks++;
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	char p[4096];
	snprintf(p, sizeof(p), "%s/fifo", fr_dir);
	if (mkfifo(p, 0600))
		fr_die("mkfifo");
	r = open(p, O_RDONLY | O_NONBLOCK);
	w = open(p, O_WRONLY);
	if (r < 0 || w < 0 || write(w, "queued-in-fifo", 14) != 14)
		fr_die("fifo");
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
