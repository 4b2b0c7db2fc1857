/* A userfaultfd with a registered range (missing-page mode). Faults of a registered range are
 * served by the process; Ferry refuses it (a registration cannot be carried today).
 * compat-object: userfaultfd with a registered range
 * compat-refuse: userfaultfd
 */
#include "common.h"

#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>

static int uffd;
static char *area;

static void check(void)
{
	struct uffdio_copy c;
	char page[4096];
	memset(page, 'u', sizeof(page));
	/* Fill page 1 through the uffd (no fault needed), then read it. */
	static int done;
	if (!done) {
		c.dst = (uint64_t)(uintptr_t)(area + 4096);
		c.src = (uint64_t)(uintptr_t)page;
		c.len = 4096;
		c.mode = 0;
		c.copy = 0;
		if (ioctl(uffd, UFFDIO_COPY, &c) || c.copy != 4096) {
			fr_status("BAD UFFDIO_COPY: %s", strerror(errno));
			return;
		}
		done = 1;
	}
	if (area[4096 + 17] != 'u') {
		fr_status("BAD page contents");
		return;
	}
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (uffd < 0)
		fr_die("userfaultfd");
	struct uffdio_api api = {.api = UFFD_API};
	if (ioctl(uffd, UFFDIO_API, &api))
		fr_die("UFFDIO_API");
	area = mmap(NULL, 4 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct uffdio_register reg = {.range = {.start = (uint64_t)(uintptr_t)area, .len = 4 * 4096},
				      .mode = UFFDIO_REGISTER_MODE_MISSING};
	if (ioctl(uffd, UFFDIO_REGISTER, &reg))
		fr_die("UFFDIO_REGISTER");
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
