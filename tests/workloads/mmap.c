/* Every kind of mapping the engine restores:
 * compat-object: every kind of mapping
 *  - a private file mapping with two pages written (COW), the file itself untouched;
 *  - a shared file mapping: writes reach the file, and must still after a restore;
 *  - MAP_SHARED|MAP_ANONYMOUS memory;
 *  - a PROT_NONE guard page between two RW pages (it must still fault);
 *  - a MAP_GROWSDOWN area that grows on access below its start (again after a restore);
 *  - a 48 MiB heap from sbrk, and sbrk working afterwards.
 * SIGUSR1: "ok pid=P counter=N checks=K" or "BAD what". */
#include "common.h"

#include <setjmp.h>
#include <sys/mman.h>

#define PS 4096ul
#define NPAGES 16
#define HEAP (48ul << 20)

static unsigned char *priv, *shr, *anon_shr, *guard, *gd, *heap, *heap_end;
static uint64_t heap_sum;
static int shared_fd, mapped_fd;
static unsigned long checks, gd_pages = 1;
static sigjmp_buf segv_jmp;

static void on_segv(int sig)
{
	(void)sig;
	siglongjmp(segv_jmp, 1);
}

static void *map(void *addr, size_t len, int prot, int flags, int fd)
{
	void *p = mmap(addr, len, prot, flags, fd, 0);
	if (p == MAP_FAILED)
		fr_die("mmap");
	return p;
}

static int maps_has(void *start, void *end, const char *perms)
{
	FILE *f = fopen("/proc/self/maps", "r");
	if (!f)
		return 0;
	char line[512];
	int found = 0;
	while (fgets(line, sizeof(line), f)) {
		unsigned long s, e;
		char p[8];
		if (sscanf(line, "%lx-%lx %7s", &s, &e, p) == 3 && s == (unsigned long)start &&
		    e == (unsigned long)end && !strcmp(p, perms))
			found = 1;
	}
	fclose(f);
	return found;
}

static const char *check(void)
{
	static char why[256];
	/* private file mapping: written pages are ours, the others are the file's */
	for (unsigned long i = 0; i < NPAGES * PS; i++) {
		unsigned long page = i / PS;
		unsigned char want = (page == 1 || page == 5) ? (unsigned char)('P' + page)
							       : fr_data_byte((long)i);
		if (priv[i] != want) {
			snprintf(why, sizeof(why), "private mapping byte %lu", i);
			return why;
		}
	}
	unsigned char b;
	if (pread(mapped_fd, &b, 1, PS + 7) != 1 || b != fr_data_byte(PS + 7))
		return "private mapping leaked into the file";
	/* shared file mapping */
	if (shr[2 * PS] != 'S' || shr[3 * PS + 1] != (unsigned char)(checks & 0xff))
		return "shared mapping content";
	shr[3 * PS + 1] = (unsigned char)((checks + 1) & 0xff);
	if (pread(shared_fd, &b, 1, 3 * PS + 1) != 1 || b != (unsigned char)((checks + 1) & 0xff))
		return "shared mapping no longer writes through to its file";
	/* shared anonymous */
	for (unsigned long i = 0; i < 8 * PS; i++)
		if (anon_shr[i] != (unsigned char)('A' + i / PS)) {
			snprintf(why, sizeof(why), "shared anonymous byte %lu", i);
			return why;
		}
	/* guard */
	if (guard[0] != 'g' || guard[2 * PS] != 'h')
		return "pages around the guard";
	if (!maps_has(guard + PS, guard + 2 * PS, "---p"))
		return "guard page is not PROT_NONE in maps";
	fr_install(SIGSEGV, on_segv, SA_NODEFER);
	volatile unsigned char *probe = guard + PS;
	int faulted = 0;
	if (sigsetjmp(segv_jmp, 1) == 0)
		(void)*probe;
	else
		faulted = 1;
	signal(SIGSEGV, SIG_DFL);
	if (!faulted)
		return "guard page did not fault";
	/* growsdown: the pages grown so far, then one more */
	for (unsigned long p = 1; p <= gd_pages; p++)
		if (gd[-(long)(p * PS) + 5] != (unsigned char)p)
			return "growsdown content";
	if (gd[0] != 'D')
		return "growsdown top content";
	if (gd_pages < 64) {
		gd_pages++;
		gd[-(long)(gd_pages * PS) + 5] = (unsigned char)gd_pages;
		if (!maps_has(gd - gd_pages * PS, gd + 16 * PS, "rw-p"))
			return "growsdown area did not grow";
	}
	/* heap */
	if (fr_checksum(heap, HEAP) != heap_sum)
		return "heap checksum";
	if (sbrk(0) != heap_end)
		return "brk moved";
	unsigned char *more = sbrk(1 << 20);
	if (more == (void *)-1)
		return "sbrk after restore failed";
	memset(more, 0x5a, 1 << 20);
	for (unsigned long i = 0; i < (1 << 20); i += PS)
		if (more[i] != 0x5a)
			return "new heap memory";
	if (sbrk(-(1 << 20)) == (void *)-1 || sbrk(0) != heap_end)
		return "sbrk shrink";
	return NULL;
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	char path[4096];

	fr_write_data_file("mapped", NPAGES * PS);
	snprintf(path, sizeof(path), "%s/mapped", fr_dir);
	mapped_fd = open(path, O_RDONLY);
	if (mapped_fd < 0)
		fr_die("open mapped");
	priv = map(NULL, NPAGES * PS, PROT_READ | PROT_WRITE, MAP_PRIVATE, mapped_fd);
	memset(priv + PS, 'P' + 1, PS);
	memset(priv + 5 * PS, 'P' + 5, PS);

	fr_write_data_file("shared", NPAGES * PS);
	snprintf(path, sizeof(path), "%s/shared", fr_dir);
	shared_fd = open(path, O_RDWR);
	if (shared_fd < 0)
		fr_die("open shared");
	shr = map(NULL, NPAGES * PS, PROT_READ | PROT_WRITE, MAP_SHARED, shared_fd);
	shr[2 * PS] = 'S';
	shr[3 * PS + 1] = 0;

	anon_shr = map(NULL, 8 * PS, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1);
	for (unsigned long i = 0; i < 8 * PS; i++)
		anon_shr[i] = (unsigned char)('A' + i / PS);

	guard = map(NULL, 3 * PS, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1);
	guard[0] = 'g';
	guard[2 * PS] = 'h';
	if (mprotect(guard + PS, PS, PROT_NONE))
		fr_die("mprotect");

	heap = sbrk(0);
	if (sbrk(HEAP) == (void *)-1)
		fr_die("sbrk");
	fr_fill(heap, HEAP, 0xbeef);
	heap_sum = fr_checksum(heap, HEAP);
	heap_end = sbrk(0);

	/* A PROT_NONE reservation below a hole below the growsdown area: the stack guard gap only
	 * counts accessible neighbours, so the area can grow into the hole. */
	unsigned char *res = map(NULL, 4ul << 20, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1);
	if (munmap(res + (1ul << 20), 3ul << 20))
		fr_die("munmap");
	gd = map(res + (4ul << 20) - 16 * PS, 16 * PS, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_GROWSDOWN | MAP_FIXED_NOREPLACE, -1);
	gd[0] = 'D';
	gd[-(long)PS + 5] = 1;

	const char *why = check();
	if (why) {
		fr_status("BAD before checkpoint: %s", why);
		for (;;)
			pause();
	}
	checks++;
	fr_ready();
	unsigned long counter = 0;
	for (;;) {
		if (fr_usr1_pending) {
			fr_usr1_pending = 0;
			why = check();
			if (why)
				fr_status("BAD %s", why);
			else
				fr_status("ok pid=%d counter=%lu checks=%lu", (int)getpid(), counter,
					  ++checks);
		}
		counter++;
		fr_log_tick(counter);
		struct timespec ts = {0, 20 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
}
