/* Two Linux native AIO contexts (io_setup) at indexes 1 and 2 of the process's table, index 0
 * free (its context destroyed): the kernel finds a context by the index written in its ring,
 * so both must keep theirs. Each check submits and reaps a pwrite on each, and reads the
 * indexes in the rings; a context made afterwards and destroyed again takes the free index 0.
 * compat-object: AIO contexts (io_setup) at table indexes with a hole below them
 */
#include "common.h"

#include <linux/aio_abi.h>
#include <sys/syscall.h>

static aio_context_t ctx[2], ctx0[2];
static int fd;
static unsigned n;

static void check(void)
{
	for (int i = 0; i < 2; i++) {
		unsigned *ring = (unsigned *)ctx[i];
		if (ctx[i] != ctx0[i] || ring[0] != (unsigned)i + 1) {
			fr_status("BAD context %d: id changed or ring index %u", i, ring[0]);
			return;
		}
		char buf[16];
		int len = snprintf(buf, sizeof(buf), "ctx %d %u\n", i, ++n % 1000);
		struct iocb cb = {.aio_fildes = (uint32_t)fd, .aio_lio_opcode = IOCB_CMD_PWRITE,
				  .aio_buf = (uint64_t)(uintptr_t)buf, .aio_nbytes = (uint64_t)len,
				  .aio_offset = 64 * i, .aio_data = 300u + (unsigned)i};
		struct iocb *cbs[1] = {&cb};
		struct io_event ev;
		struct timespec ts = {2, 0};
		if (syscall(SYS_io_submit, ctx[i], 1, cbs) != 1 ||
		    syscall(SYS_io_getevents, ctx[i], 1, 1, &ev, &ts) != 1 ||
		    ev.data != 300u + (unsigned)i || ev.res != len) {
			fr_status("BAD context %d: %s", i, strerror(errno));
			return;
		}
	}
	aio_context_t t = 0;
	if (syscall(SYS_io_setup, 1, &t) || ((unsigned *)t)[0] != 0 || syscall(SYS_io_destroy, t)) {
		fr_status("BAD a new context did not take the free index 0");
		return;
	}
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	fd = fr_open_in_dir("aio.out", O_RDWR | O_CREAT | O_TRUNC, 0644);
	aio_context_t first = 0;
	if (syscall(SYS_io_setup, 4, &first) || syscall(SYS_io_setup, 8, &ctx[0]) ||
	    syscall(SYS_io_setup, 300, &ctx[1]) || syscall(SYS_io_destroy, first))
		fr_die("io_setup");
	ctx0[0] = ctx[0];
	ctx0[1] = ctx[1];
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
