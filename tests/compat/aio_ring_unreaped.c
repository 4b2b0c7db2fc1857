/* A Linux native AIO context (io_setup) holding three completed events not reaped yet, the
 * ring's head and tail past its end: each check finds them in the ring, reaps them with
 * io_getevents (their data, object and result), and leaves three new ones completed and not
 * reaped (pwrites of a file in STATEDIR, whose contents it checks).
 * compat-object: AIO context (io_setup) with completed events not reaped
 */
#include "common.h"

#include <linux/aio_abi.h>
#include <sys/syscall.h>

#define PENDING 3

struct ring {
	unsigned id, nr, head, tail, magic, compat_features, incompat_features, header_length;
};

static aio_context_t ctx, ctx0;
static int fd;
static unsigned seq; /* requests submitted so far */
static struct iocb cbs[PENDING];
static char bufs[PENDING][16];

/* Submits PENDING pwrites (block seq..seq+PENDING-1), all complete on return. */
static const char *leave_pending(void)
{
	struct iocb *p[PENDING];
	for (int i = 0; i < PENDING; i++) {
		snprintf(bufs[i], 16, "write %07u", (seq + i) % 10000000u);
		cbs[i] = (struct iocb){.aio_data = 5000 + seq + i, .aio_lio_opcode = IOCB_CMD_PWRITE,
				       .aio_fildes = (uint32_t)fd,
				       .aio_buf = (uint64_t)(uintptr_t)bufs[i], .aio_nbytes = 16,
				       .aio_offset = 16 * (int64_t)(seq + i)};
		p[i] = &cbs[i];
	}
	if (syscall(SYS_io_submit, ctx, PENDING, p) != PENDING)
		return "io_submit";
	seq += PENDING;
	return NULL;
}

/* Reaps the PENDING events of the last leave_pending(). */
static const char *reap(void)
{
	struct io_event ev[PENDING + 1];
	struct timespec ts = {0, 0};
	long n = syscall(SYS_io_getevents, ctx, 0, PENDING + 1, ev, &ts);
	if (n != PENDING)
		return n < 0 ? "io_getevents failed" : "io_getevents: not the events left unreaped";
	for (int i = 0; i < PENDING; i++) {
		unsigned s = seq - PENDING + (unsigned)i;
		if (ev[i].data != 5000 + s || ev[i].obj != (uint64_t)(uintptr_t)&cbs[i] ||
		    ev[i].res != 16)
			return "an event differs from its request";
	}
	return NULL;
}

static void check(void)
{
	if (ctx != ctx0) {
		fr_status("BAD context id changed");
		return;
	}
	struct ring *ring = (struct ring *)ctx;
	unsigned in_ring = (ring->tail + ring->nr - ring->head) % ring->nr;
	if (ring->magic != 0xa10a10a1 || in_ring != PENDING ||
	    ring->tail != seq % ring->nr) {
		fr_status("BAD ring: magic %x head %u tail %u nr %u, want %d events up to %u",
			  ring->magic, ring->head, ring->tail, ring->nr, PENDING, seq % ring->nr);
		return;
	}
	const char *bad = reap();
	if (!bad && ring->head != ring->tail)
		bad = "events left after reaping";
	if (!bad)
		bad = leave_pending();
	if (!bad && (ring->tail + ring->nr - ring->head) % ring->nr != PENDING)
		bad = "the new events are not in the ring";
	if (bad) {
		fr_status("BAD %s", bad);
		return;
	}
	for (unsigned s = 0; s < seq; s++) {
		char got[16], want[16];
		snprintf(want, 16, "write %07u", s % 10000000u);
		if (pread(fd, got, 16, 16 * (off_t)s) != 16 || memcmp(got, want, 16)) {
			fr_status("BAD write %u not in the file", s);
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
	/* Round the ring past its end first. */
	while (seq < 150) {
		if (leave_pending() || reap())
			fr_die("aio round");
	}
	if (leave_pending())
		fr_die("io_submit");
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
