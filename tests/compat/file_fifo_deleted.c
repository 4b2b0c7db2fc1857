/* A FIFO whose name was removed while both ends are open, with bytes queued: still one FIFO
 * (written on one end, read on the other).
 * compat-object: deleted FIFO with queued bytes
 */
#include "common.h"

static int r, w;
static int checks;

static void check(void)
{
	char b[64];
	const char *want = checks ? "more" : "in-deleted-fifo";
	ssize_t n = read(r, b, sizeof(b));
	if (n != (ssize_t)strlen(want) || memcmp(b, want, (size_t)n)) {
		fr_status("BAD read %zd, want '%s'", n, want);
		return;
	}
	struct stat st;
	if (fstat(w, &st) || !S_ISFIFO(st.st_mode) || st.st_nlink != 0) {
		fr_status("BAD write end not a deleted fifo");
		return;
	}
	if (write(w, "more", 4) != 4) {
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
	if (r < 0 || w < 0 || write(w, "in-deleted-fifo", 15) != 15 || unlink(p))
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
