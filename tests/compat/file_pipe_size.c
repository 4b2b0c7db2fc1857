/* A pipe enlarged with F_SETPIPE_SZ to 1 MiB and holding 600 KiB: size and contents.
 * compat-object: pipe buffer size F_SETPIPE_SZ with queued bytes above 64 KiB
 */
#include "common.h"

static int p[2];
#define LEN (600 * 1024)

static void check(void)
{
	int sz = fcntl(p[0], F_GETPIPE_SZ);
	if (sz != 1048576) {
		fr_status("BAD pipe size %d want 1048576", sz);
		return;
	}
	int q = 0;
	unsigned char *buf = malloc(LEN + 1);
	long got = 0;
	for (;;) {
		ssize_t n = read(p[0], buf + got, (size_t)(LEN + 1 - got));
		if (n <= 0)
			break;
		got += n;
	}
	for (long i = 0; i < got && !q; i++)
		if (buf[i] != fr_data_byte(i))
			q = 1;
	if (got != LEN || q) {
		fr_status("BAD read back %ld bytes (want %d), differ=%d", got, LEN, q);
		free(buf);
		return;
	}
	for (long i = 0; i < LEN; i++)
		buf[i] = fr_data_byte(i);
	if (write(p[1], buf, LEN) != LEN)
		fr_status("BAD refill");
	else
		fr_status("ok");
	free(buf);
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	if (pipe2(p, O_NONBLOCK) || fcntl(p[0], F_SETPIPE_SZ, 1048576) < 0)
		fr_die("pipe");
	unsigned char *buf = malloc(LEN);
	for (long i = 0; i < LEN; i++)
		buf[i] = fr_data_byte(i);
	if (write(p[1], buf, LEN) != LEN)
		fr_die("write");
	free(buf);
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
