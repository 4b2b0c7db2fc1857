/* FIFOs (named pipes) in the state directory.
 *
 *   fifo1: both ends open here (read end O_NONBLOCK), 128 KiB buffer, 70000 bytes queued.
 *   fifo2: one O_RDWR descriptor with 3000 bytes queued.
 *   fifo3 (created by the test, which holds the read end): the write end only; 1000 bytes
 *          of 'A' written before the dump, 1000 of 'B' at each check. Its bytes stay in the
 *          FIFO the test holds.
 * SIGUSR1: drain fifo1 and fifo2, check every byte, refill them; write to fifo3.
 */
#include "common.h"

#define LEN1 70000
#define LEN2 3000

static int r1, w1, rw2, w3 = -1;

static unsigned char pat(long i, int which) { return (unsigned char)((i * 11 + which * 5 + i / 1021) & 0xff); }

static void fill(int fd, long len, int which)
{
	unsigned char *buf = malloc((size_t)len);
	for (long i = 0; i < len; i++)
		buf[i] = pat(i, which);
	fr_write_all(fd, (const char *)buf, (size_t)len);
	free(buf);
}

static long drain(int fd, long want, int which)
{
	unsigned char buf[4096];
	long got = 0;
	while (got < want) {
		long ask = want - got < (long)sizeof(buf) ? want - got : (long)sizeof(buf);
		ssize_t n = read(fd, buf, (size_t)ask);
		if (n <= 0)
			return got;
		for (ssize_t i = 0; i < n; i++)
			if (buf[i] != pat(got + i, which))
				return -1 - (got + i);
		got += n;
	}
	return got;
}

static void check(void)
{
	int sz = fcntl(w1, F_GETPIPE_SZ);
	if (sz != 128 * 1024) {
		fr_status("BAD fifo1 buffer %d", sz);
		return;
	}
	long n1 = drain(r1, LEN1 + 1, 1);
	long n2 = drain(rw2, LEN2, 2);
	int more = 0;
	/* fifo2 is O_RDWR and blocking: only ask for what should be there, then peek for more. */
	fcntl(rw2, F_SETFL, O_NONBLOCK);
	char c;
	more = read(rw2, &c, 1) > 0;
	fcntl(rw2, F_SETFL, 0);
	if (n1 != LEN1 || n2 != LEN2 || more) {
		fr_status("BAD fifo1 held %ld bytes, fifo2 %ld (more %d)", n1, n2, more);
		return;
	}
	fill(w1, LEN1, 1);
	fill(rw2, LEN2, 2);
	char b[1000];
	memset(b, 'B', sizeof(b));
	fr_write_all(w3, b, sizeof(b));
	fr_status("ok pid=%d fifo1=%ld fifo2=%ld", (int)getpid(), n1, n2);
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	char p[4096];
	snprintf(p, sizeof(p), "%s/fifo1", fr_dir);
	if (mkfifo(p, 0600))
		fr_die("mkfifo");
	r1 = open(p, O_RDONLY | O_NONBLOCK);
	w1 = open(p, O_WRONLY);
	snprintf(p, sizeof(p), "%s/fifo2", fr_dir);
	if (mkfifo(p, 0600))
		fr_die("mkfifo");
	rw2 = open(p, O_RDWR);
	if (r1 < 0 || w1 < 0 || rw2 < 0)
		fr_die("open fifo");
	if (fcntl(w1, F_SETPIPE_SZ, 128 * 1024) < 0)
		fr_die("F_SETPIPE_SZ");
	fill(w1, LEN1, 1);
	fill(rw2, LEN2, 2);
	snprintf(p, sizeof(p), "%s/fifo3", fr_dir);
	w3 = open(p, O_WRONLY | O_NONBLOCK); /* the test holds the read end */
	if (w3 < 0)
		fr_die("open fifo3");
	fcntl(w3, F_SETFL, 0);
	char b[1000];
	memset(b, 'A', sizeof(b));
	fr_write_all(w3, b, sizeof(b));
	fr_ready();
	unsigned long tick = 0;
	for (;;) {
		if (fr_usr1_pending) {
			fr_usr1_pending = 0;
			check();
		}
		fr_log_tick(++tick);
		usleep(50000);
	}
}
