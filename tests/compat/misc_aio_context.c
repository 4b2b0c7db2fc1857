/* A Linux AIO context (io_setup, 16 events): it still accepts io_submit of a pwrite and
 * io_getevents returns its completion; the context id is unchanged.
 * compat-object: AIO context (io_setup)
 */
#include "common.h"

#include <linux/aio_abi.h>
#include <sys/syscall.h>

static aio_context_t ctx, ctx0;
static int fd;
static int n;

static void check(void)
{
	if (ctx != ctx0) {
		fr_status("BAD context id changed");
		return;
	}
	char buf[32];
	int len = snprintf(buf, sizeof(buf), "aio %d\n", ++n);
	struct iocb cb = {.aio_fildes = (uint32_t)fd, .aio_lio_opcode = IOCB_CMD_PWRITE,
			  .aio_buf = (uint64_t)(uintptr_t)buf, .aio_nbytes = (uint64_t)len, .aio_offset = 0,
			  .aio_data = 0xabcdef};
	struct iocb *cbs[1] = {&cb};
	if (syscall(SYS_io_submit, ctx, 1, cbs) != 1) {
		fr_status("BAD io_submit: %s", strerror(errno));
		return;
	}
	struct io_event ev;
	struct timespec ts = {2, 0};
	if (syscall(SYS_io_getevents, ctx, 1, 1, &ev, &ts) != 1 || ev.data != 0xabcdef || ev.res != len) {
		fr_status("BAD io_getevents: %s", strerror(errno));
		return;
	}
	char back[32];
	if (pread(fd, back, (size_t)len, 0) != len || memcmp(back, buf, (size_t)len)) {
		fr_status("BAD written data");
		return;
	}
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	fd = fr_open_in_dir("aio.out", O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (syscall(SYS_io_setup, 16, &ctx))
		fr_die("io_setup");
	ctx0 = ctx;
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
