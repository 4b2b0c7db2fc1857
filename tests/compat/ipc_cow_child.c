/* 8 MiB of private anonymous memory written before a fork and not written since by either side:
 * the kernel shares those pages copy-on-write between parent and child. After the restore they
 * must still be shared: the same physical frames in both (/proc/PID/pagemap, read as root),
 * and both still read the same bytes.
 * compat-object: copy-on-write sharing of private memory between parent and child
 * compat-dump-args: --tree
 */
#include "common.h"

#include <sys/mman.h>

#define SZ (8ul << 20)
static unsigned char *m;
static pid_t child;
static uint64_t sum;

static uint64_t pfn(pid_t pid, void *addr)
{
	char p[64];
	snprintf(p, sizeof(p), "/proc/%d/pagemap", pid);
	int fd = open(p, O_RDONLY);
	uint64_t e = 0;
	pread(fd, &e, 8, (off_t)((unsigned long)addr / 4096 * 8));
	close(fd);
	if (!(e >> 63))
		return 0;
	return e & ((1ull << 55) - 1);
}

static const char *check(void)
{
	static char why[128];
	if (fr_checksum(m, SZ) != sum)
		return "contents differ";
	int shared = 0, n = 0;
	for (unsigned long off = 0; off < SZ; off += 64 * 4096, n++) {
		uint64_t a = pfn(getpid(), m + off), b = pfn(child, m + off);
		if (!a)
			return "a page is not present in the parent";
		shared += a == b;
	}
	if (shared != n) {
		snprintf(why, sizeof(why), "%d of %d sampled pages shared with the child", shared, n);
		return why;
	}
	return NULL;
}

static void setup(void)
{
	m = mmap(NULL, SZ, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	madvise(m, SZ, MADV_NOHUGEPAGE);
	fr_fill(m, SZ, 4242);
	for (unsigned long off = 0; off < SZ; off += 4096)
		m[off] |= 1; /* no zero pages */
	sum = fr_checksum(m, SZ);
	child = fork();
	if (child == 0) {
		close(fr_status_fd);
		close(fr_log_fd);
		volatile uint64_t s = 0;
		for (;;) {
			s += m[(s * 4096) % SZ]; /* reads only */
			usleep(10000);
		}
	}
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	setup();
	fr_ready();
	for (unsigned long tick = 1;; tick++) {
		if (fr_usr1_pending) {
			fr_usr1_pending = 0;
			const char *why = getpid() != fr_pid0 ? "getpid() changed" : check();
			if (why)
				fr_status("BAD %s", why);
			else
				fr_status("ok pid=%d", (int)getpid());
		}
		fr_log_tick(tick);
		usleep(10000);
	}
}
