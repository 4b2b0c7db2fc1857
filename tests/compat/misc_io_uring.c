/* An io_uring instance (its rings mapped). Ferry keeps io_uring refused: the dump must say so.
 * compat-object: io_uring instance
 * compat-refuse: io_uring
 */
#include "common.h"

#include <linux/io_uring.h>
#include <sys/mman.h>
#include <sys/syscall.h>

static int ring;
static void *sq;

static void check(void)
{
	struct stat st;
	if (fstat(ring, &st)) {
		fr_status("BAD ring fd gone");
		return;
	}
	/* A NOP through the ring would need the full ring protocol; the mapping is enough to hold it. */
	if (!sq || *(volatile unsigned *)sq > 1u << 20) {
		fr_status("BAD ring mapping");
		return;
	}
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	struct io_uring_params p;
	memset(&p, 0, sizeof(p));
	ring = (int)syscall(SYS_io_uring_setup, 8, &p);
	if (ring < 0)
		fr_die("io_uring_setup");
	sq = mmap(NULL, p.sq_off.array + p.sq_entries * sizeof(unsigned), PROT_READ | PROT_WRITE, MAP_SHARED,
		  ring, IORING_OFF_SQ_RING);
	if (sq == MAP_FAILED)
		fr_die("mmap");
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
