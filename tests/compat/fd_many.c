/* 3000 descriptors: pipes, eventfds, files and sockets interleaved, each with a distinguishing
 * offset or count: every one is there and the right kind.
 * compat-object: a large descriptor table (3000 fds of mixed kinds)
 */
#include "common.h"

#include <sys/eventfd.h>
#include <sys/socket.h>

#define N 3000
static int fds[N];
static char kind[N];

static void check(void)
{
	for (int i = 0; i < N; i++) {
		struct stat st;
		if (fstat(fds[i], &st)) {
			fr_status("BAD fd %d gone", fds[i]);
			return;
		}
		int ok = 1;
		switch (kind[i]) {
		case 'f':
			ok = S_ISREG(st.st_mode) && lseek(fds[i], 0, SEEK_CUR) == i;
			break;
		case 'p':
			ok = S_ISFIFO(st.st_mode);
			break;
		case 's':
			ok = S_ISSOCK(st.st_mode);
			break;
		case 'e': {
			uint64_t v = 0;
			ok = read(fds[i], &v, 8) == 8 && v == (uint64_t)i + 1;
			v = (uint64_t)i + 1;
			ok = ok && write(fds[i], &v, 8) == 8;
			break;
		}
		}
		if (!ok) {
			fr_status("BAD fd %d (kind %c, #%d) differs", fds[i], kind[i], i);
			return;
		}
	}
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	fr_write_data_file("data", 4096);
	for (int i = 0; i < N; i += 2) {
		switch ((i / 2) % 4) {
		case 0:
			fds[i] = fr_open_in_dir("data", O_RDONLY, 0);
			lseek(fds[i], i, SEEK_SET);
			fds[i + 1] = fr_open_in_dir("data", O_RDONLY, 0);
			lseek(fds[i + 1], i + 1, SEEK_SET);
			kind[i] = kind[i + 1] = 'f';
			break;
		case 1:
			if (pipe(fds + i))
				fr_die("pipe");
			kind[i] = kind[i + 1] = 'p';
			break;
		case 2:
			if (socketpair(AF_UNIX, SOCK_STREAM, 0, fds + i))
				fr_die("socketpair");
			kind[i] = kind[i + 1] = 's';
			break;
		case 3:
			fds[i] = eventfd((unsigned)i + 1, EFD_NONBLOCK);
			fds[i + 1] = eventfd((unsigned)i + 2, EFD_NONBLOCK);
			kind[i] = kind[i + 1] = 'e';
			break;
		}
	}
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
