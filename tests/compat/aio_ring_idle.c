/* A Linux native AIO context (io_setup) with nothing pending, its ring's head and tail moved
 * round the ring past its end by 200 pwrite/pread requests submitted and reaped before: each
 * check submits a pwrite and a pread on the same context id, reaps both (their data and results),
 * and finds the ring's head and tail where its own count puts them (the kernel's tail and the
 * ring's agree) and the file holding every block written so far.
 * compat-object: AIO context (io_setup) with no request pending
 */
#include "common.h"

#include <linux/aio_abi.h>
#include <sys/syscall.h>

struct ring {
	unsigned id, nr, head, tail, magic, compat_features, incompat_features, header_length;
};

static aio_context_t ctx, ctx0;
static int fd;
static unsigned done; /* requests completed and reaped so far */
static unsigned blocks; /* blocks written */

static void block(unsigned n, char *out)
{
	memset(out, 0, 32);
	snprintf(out, 32, "block %u of the aio victim", n);
}

/* One pwrite of block `blocks` and one pread of block `blocks - 1`; 0 or what failed. */
static const char *round_trip(void)
{
	char w[32], r[32] = {0}, want[32];
	block(blocks, w);
	struct iocb cw = {.aio_data = 1000 + blocks, .aio_lio_opcode = IOCB_CMD_PWRITE,
			  .aio_fildes = (uint32_t)fd, .aio_buf = (uint64_t)(uintptr_t)w,
			  .aio_nbytes = 32, .aio_offset = 32 * (int64_t)blocks};
	struct iocb cr = {.aio_data = 2000 + blocks, .aio_lio_opcode = IOCB_CMD_PREAD,
			  .aio_fildes = (uint32_t)fd, .aio_buf = (uint64_t)(uintptr_t)r,
			  .aio_nbytes = 32, .aio_offset = blocks ? 32 * (int64_t)(blocks - 1) : 0};
	struct iocb *cbs[2] = {&cw, &cr};
	if (syscall(SYS_io_submit, ctx, 2, cbs) != 2)
		return "io_submit";
	struct io_event ev[3];
	struct timespec ts = {2, 0};
	if (syscall(SYS_io_getevents, ctx, 2, 3, ev, &ts) != 2)
		return "io_getevents";
	for (int i = 0; i < 2; i++) {
		if (ev[i].data == 1000 + blocks) {
			if (ev[i].res != 32 || ev[i].obj != (uint64_t)(uintptr_t)&cw)
				return "the pwrite's event";
		} else if (ev[i].data == 2000 + blocks) {
			if (ev[i].res != 32 || ev[i].obj != (uint64_t)(uintptr_t)&cr)
				return "the pread's event";
		} else {
			return "an event of no request of ours";
		}
	}
	block(blocks ? blocks - 1 : 0, want);
	if (memcmp(r, want, 32))
		return "the pread's data";
	blocks++;
	done += 2;
	return NULL;
}

static void check(void)
{
	if (ctx != ctx0) {
		fr_status("BAD context id changed");
		return;
	}
	struct ring *ring = (struct ring *)ctx;
	if (ring->magic != 0xa10a10a1 || ring->header_length != 32 || ring->nr < 32) {
		fr_status("BAD ring header: magic %x length %u nr %u", ring->magic, ring->header_length,
			  ring->nr);
		return;
	}
	if (ring->head != done % ring->nr || ring->tail != done % ring->nr) {
		fr_status("BAD ring head %u tail %u, want both %u", ring->head, ring->tail,
			  done % ring->nr);
		return;
	}
	const char *bad = round_trip();
	if (bad) {
		fr_status("BAD %s: %s", bad, strerror(errno));
		return;
	}
	if (ring->head != done % ring->nr || ring->tail != done % ring->nr) {
		fr_status("BAD after a round trip: ring head %u tail %u, want both %u", ring->head,
			  ring->tail, done % ring->nr);
		return;
	}
	for (unsigned n = 0; n < blocks; n++) {
		char got[32], want[32];
		block(n, want);
		if (pread(fd, got, 32, 32 * (off_t)n) != 32 || memcmp(got, want, 32)) {
			fr_status("BAD block %u of the file", n);
			return;
		}
	}
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	fd = fr_open_in_dir("aio.data", O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (syscall(SYS_io_setup, 16, &ctx))
		fr_die("io_setup");
	ctx0 = ctx;
	while (done < 200) {
		const char *bad = round_trip();
		if (bad)
			fr_die(bad);
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
