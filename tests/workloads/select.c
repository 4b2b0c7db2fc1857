/* select() on stdin (a pipe) with 300 ms timeouts: a tick per timeout, "got LINE" per line read,
 * "eof" at end of file. SIGUSR1 makes it report "ok pid=P counter=N". */
#include "common.h"

#include <sys/select.h>

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	unsigned long counter = 0;
	int eof = 0;
	fr_ready();
	for (;;) {
		fd_set rfds;
		FD_ZERO(&rfds);
		if (!eof)
			FD_SET(0, &rfds);
		struct timeval tv = {0, 300 * 1000};
		int n = select(eof ? 0 : 1, &rfds, NULL, NULL, &tv);
		if (fr_usr1_pending) {
			fr_usr1_pending = 0;
			fr_status("ok pid=%d counter=%lu", (int)getpid(), counter);
		}
		if (n < 0) {
			if (errno != EINTR)
				fr_status("BAD select: %s", strerror(errno));
			continue;
		}
		if (n == 0) {
			counter++;
			fr_log_tick(counter);
			continue;
		}
		char buf[512];
		ssize_t r = read(0, buf, sizeof(buf) - 1);
		if (r <= 0) {
			fr_status("eof pid=%d", (int)getpid());
			eof = 1;
			continue;
		}
		while (r > 0 && (buf[r - 1] == '\n' || buf[r - 1] == '\r'))
			r--;
		buf[r] = 0;
		fr_status("got %s pid=%d", buf, (int)getpid());
	}
}
