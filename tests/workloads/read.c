/* Blocked in read(0). Each line read is reported as "got LINE"; end of file as "eof". A read that
 * fails with EINTR is a bug here (SIGUSR1 has SA_RESTART, and a checkpoint is not a signal). */
#include "common.h"

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	fr_install(SIGUSR1, fr_usr1_reporting_handler, SA_RESTART);
	fr_ready();
	char buf[512];
	for (;;) {
		ssize_t n = read(0, buf, sizeof(buf) - 1);
		if (n < 0) {
			fr_status("BAD read: %s", strerror(errno));
			sleep(1);
			continue;
		}
		if (n == 0) {
			fr_status("eof pid=%d", (int)getpid());
			for (;;)
				pause();
		}
		while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
			n--;
		buf[n] = 0;
		fr_status("got %s pid=%d", buf, (int)getpid());
	}
}
