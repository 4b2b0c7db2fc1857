/* A Linux native AIO context (io_setup) made before a fork: the child maps its parent's ring
 * (the mapping is copied, the context is not: io_submit on it fails in the child). The parent
 * still uses its context; the child reports that the ring is mapped and not a context of its.
 * compat-object: AIO ring inherited across fork (the parent's context)
 * compat-dump-args: --tree
 * compat-refuse: not the process's own
 */
#include "common.h"

#include <linux/aio_abi.h>
#include <sys/syscall.h>
#include <sys/wait.h>

static aio_context_t ctx, ctx0;
static int fd, n;
static pid_t child;
static int pipefd[2];

static void check(void)
{
	if (ctx != ctx0) {
		fr_status("BAD context id changed");
		return;
	}
	char buf[32];
	int len = snprintf(buf, sizeof(buf), "aio %d\n", ++n);
	struct iocb cb = {.aio_fildes = (uint32_t)fd, .aio_lio_opcode = IOCB_CMD_PWRITE,
			  .aio_buf = (uint64_t)(uintptr_t)buf, .aio_nbytes = (uint64_t)len, .aio_data = 77};
	struct iocb *cbs[1] = {&cb};
	struct io_event ev;
	struct timespec ts = {2, 0};
	if (syscall(SYS_io_submit, ctx, 1, cbs) != 1 ||
	    syscall(SYS_io_getevents, ctx, 1, 1, &ev, &ts) != 1 || ev.data != 77 || ev.res != len) {
		fr_status("BAD the parent's context: %s", strerror(errno));
		return;
	}
	/* Ask the child: it answers 'y' when the ring is mapped in it and not a context of its. */
	char c = '?';
	if (kill(child, SIGUSR2) || read(pipefd[0], &c, 1) != 1 || c != 'y') {
		fr_status("BAD the child's view of the ring: %c", c);
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
	if (syscall(SYS_io_setup, 16, &ctx) || pipe(pipefd))
		fr_die("io_setup");
	ctx0 = ctx;
	fr_install(SIGUSR2, on_usr2, SA_RESTART);
	child = fork();
	if (child < 0)
		fr_die("fork");
	if (child == 0) {
		for (;;) {
			if (asked) {
				asked = 0;
				volatile unsigned *ring = (volatile unsigned *)ctx;
				int own = syscall(SYS_io_submit, ctx, 0, NULL) == 0;
				char c = ring[4] == 0xa10a10a1 && !own ? 'y' : 'n';
				if (write(pipefd[1], &c, 1) != 1)
					_exit(1);
			}
			usleep(10000);
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
