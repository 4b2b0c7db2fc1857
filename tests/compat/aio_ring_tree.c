/* Linux native AIO contexts (io_setup) in a parent and its child, each made after the fork
 * (so each maps only its own ring), both with events completed and reaped round the ring:
 * the parent submits and reaps a pwrite on its context; the child, asked, does the same on
 * its own and answers through a pipe.
 * compat-object: AIO contexts (io_setup) of two processes of a tree
 * compat-dump-args: --tree
 */
#include "common.h"

#include <linux/aio_abi.h>
#include <sys/syscall.h>
#include <sys/wait.h>

static aio_context_t ctx, ctx0;
static int fd, n;
static pid_t child;
static int pipefd[2];

/* A pwrite of "aio N" at offset `off` on `c`, reaped: 0 when it came back right. */
static int round_trip(aio_context_t c, off_t off, int i)
{
	char buf[32];
	int len = snprintf(buf, sizeof(buf), "aio %d\n", i);
	struct iocb cb = {.aio_fildes = (uint32_t)fd, .aio_lio_opcode = IOCB_CMD_PWRITE,
			  .aio_buf = (uint64_t)(uintptr_t)buf, .aio_nbytes = (uint64_t)len,
			  .aio_offset = off, .aio_data = 1000u + (unsigned)i};
	struct iocb *cbs[1] = {&cb};
	struct io_event ev;
	struct timespec ts = {2, 0};
	if (syscall(SYS_io_submit, c, 1, cbs) != 1 ||
	    syscall(SYS_io_getevents, c, 1, 1, &ev, &ts) != 1 || ev.data != 1000u + (unsigned)i ||
	    ev.res != len)
		return -1;
	char back[32];
	return pread(fd, back, (size_t)len, off) == len && !memcmp(back, buf, (size_t)len) ? 0 : -1;
}

static void check(void)
{
	if (ctx != ctx0 || round_trip(ctx, 0, ++n)) {
		fr_status("BAD the parent's context");
		return;
	}
	char c = '?';
	if (kill(child, SIGUSR2) || read(pipefd[0], &c, 1) != 1 || c != 'y') {
		fr_status("BAD the child's context: %c", c);
		return;
	}
	fr_status("ok");
}

static volatile sig_atomic_t asked;
static void on_usr2(int sig)
{
	(void)sig;
	asked = 1;
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	fd = fr_open_in_dir("aio.out", O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (pipe(pipefd))
		fr_die("pipe");
	fr_install(SIGUSR2, on_usr2, SA_RESTART);
	child = fork();
	if (child < 0)
		fr_die("fork");
	if (child == 0) {
		aio_context_t mine = 0;
		if (syscall(SYS_io_setup, 1, &mine))
			_exit(1);
		aio_context_t mine0 = mine;
		int k = 0;
		while (k < 140)
			if (round_trip(mine, 4096, ++k))
				_exit(1);
		for (;;) {
			if (asked) {
				asked = 0;
				char c = mine == mine0 && !round_trip(mine, 4096, ++k) ? 'y' : 'n';
				if (write(pipefd[1], &c, 1) != 1)
					_exit(1);
			}
			usleep(10000);
		}
	}
	if (syscall(SYS_io_setup, 16, &ctx))
		fr_die("io_setup");
	ctx0 = ctx;
	while (n < 130)
		if (round_trip(ctx, 0, ++n))
			fr_die("aio round");
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
