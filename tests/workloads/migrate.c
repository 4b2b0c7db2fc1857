/* The migration victim: a buffer of MIB MiB with a known checksum, a counter in memory, and
 * optionally a mapped file (a library of its own, say) whose contents it checks.
 *
 *   migrate STATEDIR MIB [--times] [--map PATH] [--child] [--fork-on-usr2] [--write MBPS]
 *           [--drop] [--move] [--read-back MBPS] [--holes]
 *
 * With --child it forks a child at start, with --fork-on-usr2 one on each SIGUSR2 (each named
 * "migrate-child", sleeping, killed when the victim ends) and appends "forked pid=C".
 * Every millisecond it counts; every 20 counts it logs "tick N". With --times it appends the
 * wall-clock time (ns) to STATEDIR/times every millisecond, so the longest gap is its downtime.
 * With --write it keeps rewriting its buffer at MBPS MB/s, page after page (a live migration's
 * load): page P holds a pattern of (P, its generation), generations kept in a separate array,
 * and the check verifies every page against its generation and the sum of generations
 * against the number of writes (any page or generation lost or stale shows).
 * With --drop (and --write) it also drops pages the kernel then gives back as zeroes, behind
 * the writer: every 10 ms one page with MADV_DONTNEED (every other one read again at once,
 * which maps the zero page there); the check wants a dropped page zero until the writer
 * writes it again. With --move (and --write) every 50 ms it moves 16 pages away and back
 * with mremap. With --read-back (and --write) it also reads its buffer at MBPS MB/s from the
 * last page down to the first, over and over, each page checked against its generation (the
 * opposite order of a post-copy push: its first reads after a migration are of pages that have
 * not arrived yet); a page that does not hold it is remembered and reported by the check.
 * With --holes (and --write) it drops 16 pages of every 64 once filled (MADV_DONTNEED: zeros
 * when read, the shared zero page once its checksum read them, until the writer comes by
 * again); the check wants them zero.
 * On SIGUSR1 it verifies itself and appends to the status file:
 *   ok pid=P counter=N sum=S
 * or BAD followed by what is wrong.
 */
#include "common.h"

#include <sys/mman.h>
#include <sys/prctl.h>

static volatile sig_atomic_t usr2_pending;

static void on_usr2(int sig)
{
	(void)sig;
	usr2_pending = 1;
}

/* A child that sleeps until the victim ends. */
static void fork_child(void)
{
	pid_t c = fork();
	if (c < 0)
		fr_die("fork");
	if (c == 0) {
		prctl(PR_SET_NAME, "migrate-child");
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != fr_pid0)
			_exit(0);
		for (;;)
			pause();
	}
	fr_status("forked pid=%d", (int)c);
}

static unsigned char *big;
static size_t big_len;
static uint64_t big_sum;
static unsigned long counter;
static unsigned long last_checked;
static const unsigned char *mapped;
static size_t mapped_len;
static uint64_t mapped_sum;
static char canary[64] = "the data segment came along";
static double write_mbps;
static uint32_t *gen;
static size_t npages;
static uint64_t writes;
static size_t cursor;
static double owed;
static int drop, move, holes;
static unsigned char *zeroed;
static double read_mbps;
static double read_owed;
static size_t read_cursor;
static unsigned long pages_read;
static long read_bad = -1;

static void fill_page(size_t p)
{
	uint64_t *w = (uint64_t *)(big + p * 4096);
	uint64_t s = (p + 1) * 0x9E3779B97F4A7C15ull ^ ((uint64_t)gen[p] << 32);
	for (int i = 0; i < 512; i++)
		w[i] = s + (uint64_t)i * 0xC2B2AE3D27D4EB4Full;
}

/* Whether page P holds its generation's pattern. */
static int page_ok(size_t p)
{
	const uint64_t *w = (const uint64_t *)(big + p * 4096);
	uint64_t s = (p + 1) * 0x9E3779B97F4A7C15ull ^ ((uint64_t)gen[p] << 32);
	for (int i = 0; i < 512; i++)
		if (w[i] != (zeroed && zeroed[p] ? 0 : s + (uint64_t)i * 0xC2B2AE3D27D4EB4Full))
			return 0;
	return 1;
}

/* The first page that does not hold its generation's pattern, or -1. */
static long bad_page(void)
{
	for (size_t p = 0; p < npages; p++)
		if (!page_ok(p))
			return (long)p;
	return -1;
}

/* One millisecond's share of --read-back: pages checked from the last one down. */
static void read_some(void)
{
	read_owed += read_mbps * 1e6 / 1000.0 / 4096.0;
	while (read_owed >= 1.0 && npages) {
		read_owed -= 1.0;
		size_t p = npages - 1 - read_cursor++ % npages;
		pages_read++;
		if (read_bad < 0 && !page_ok(p))
			read_bad = (long)p;
	}
}

/* One millisecond's share of --write. */
static void write_some(void)
{
	owed += write_mbps * 1e6 / 1000.0 / 4096.0;
	while (owed >= 1.0) {
		owed -= 1.0;
		size_t p = cursor++ % npages;
		gen[p]++;
		fill_page(p);
		if (zeroed)
			zeroed[p] = 0;
		writes++;
	}
}

/* --drop: a page dropped (and maybe read again as the zero page) every 10 ms, half the buffer
 * behind the writer; --move: 16 pages moved away and back every 50 ms. */
static void drop_some(unsigned long tick)
{
	static size_t dcursor;
	static char *spare;
	if (npages < 64)
		return;
	if (drop && tick % 10 == 0) {
		size_t p = (cursor + npages / 2 + dcursor++) % npages;
		if (madvise(big + p * 4096, 4096, MADV_DONTNEED))
			fr_die("madvise");
		zeroed[p] = 1;
		if (dcursor % 2) {
			volatile const unsigned char *r = big + p * 4096;
			(void)*r;
		}
	}
	if (move && tick % 50 == 0) {
		size_t p = (cursor + npages / 4) % (npages - 16);
		if (!spare) {
			spare = mmap(NULL, 16 * 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
			if (spare == MAP_FAILED)
				fr_die("mmap");
		}
		if (mremap(big + p * 4096, 16 * 4096, 16 * 4096, MREMAP_MAYMOVE | MREMAP_FIXED,
			   spare) == MAP_FAILED ||
		    mremap(spare, 16 * 4096, 16 * 4096, MREMAP_MAYMOVE | MREMAP_FIXED,
			   big + p * 4096) == MAP_FAILED)
			fr_die("mremap");
		/* The spare range is free again: reserve it for the next time. */
		spare = mmap(spare, 16 * 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
			     -1, 0);
		if (spare == MAP_FAILED)
			fr_die("mmap");
	}
}

static void check(void)
{
	char bad[512] = "";
	uint64_t sum = fr_checksum(big, big_len);
	if (gen) {
		uint64_t total = 0;
		for (size_t p = 0; p < npages; p++)
			total += gen[p];
		long b = bad_page();
		if (b >= 0)
			snprintf(bad, sizeof(bad), "page %ld does not hold generation %u", b, gen[b]);
		else if (read_bad >= 0)
			snprintf(bad, sizeof(bad), "page %ld read back wrong", read_bad);
		else if (total != writes)
			snprintf(bad, sizeof(bad), "generations sum to %llu, %llu writes",
				 (unsigned long long)total, (unsigned long long)writes);
	} else if (sum != big_sum)
		snprintf(bad, sizeof(bad), "checksum %016llx != %016llx", (unsigned long long)sum,
			 (unsigned long long)big_sum);
	if (!bad[0] && counter <= last_checked)
		snprintf(bad, sizeof(bad), "counter %lu did not move on from %lu", counter,
			 last_checked);
	if (!bad[0] && getpid() != fr_pid0)
		snprintf(bad, sizeof(bad), "getpid %d != %d", (int)getpid(), (int)fr_pid0);
	if (!bad[0] && strcmp(canary, "the data segment came along"))
		snprintf(bad, sizeof(bad), "data segment changed");
	if (!bad[0] && mapped && fr_checksum(mapped, mapped_len) != mapped_sum)
		snprintf(bad, sizeof(bad), "mapped file changed");
	last_checked = counter;
	if (bad[0])
		fr_status("BAD %s", bad);
	else
		fr_status("ok pid=%d counter=%lu sum=%016llx read=%lu", (int)getpid(), counter,
			  (unsigned long long)sum, pages_read);
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	if (argc < 3) {
		fprintf(stderr,
			"usage: migrate STATEDIR MIB [--times] [--map PATH] [--child] [--fork-on-usr2]\n");
		return 2;
	}
	big_len = (size_t)atol(argv[2]) << 20;
	int times_fd = -1;
	int child = 0;
	for (int i = 3; i < argc; i++) {
		if (!strcmp(argv[i], "--child"))
			child = 1;
		if (!strcmp(argv[i], "--fork-on-usr2"))
			fr_install(SIGUSR2, on_usr2, SA_RESTART);
		if (!strcmp(argv[i], "--write") && i + 1 < argc)
			write_mbps = atof(argv[++i]);
		if (!strcmp(argv[i], "--read-back") && i + 1 < argc)
			read_mbps = atof(argv[++i]);
		if (!strcmp(argv[i], "--drop"))
			drop = 1;
		if (!strcmp(argv[i], "--move"))
			move = 1;
		if (!strcmp(argv[i], "--holes"))
			holes = 1;
		if (!strcmp(argv[i], "--times")) {
			times_fd = fr_open_in_dir("times", O_WRONLY | O_CREAT | O_APPEND, 0644);
		} else if (!strcmp(argv[i], "--map") && i + 1 < argc) {
			int fd = open(argv[++i], O_RDONLY);
			if (fd < 0)
				fr_die(argv[i]);
			struct stat st;
			if (fstat(fd, &st))
				fr_die("fstat");
			mapped_len = (size_t)st.st_size;
			mapped = mmap(NULL, mapped_len, PROT_READ, MAP_PRIVATE, fd, 0);
			if (mapped == MAP_FAILED)
				fr_die("mmap");
			close(fd);
			mapped_sum = fr_checksum(mapped, mapped_len);
		}
	}
	big = mmap(NULL, big_len ? big_len : 4096, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (big == MAP_FAILED)
		fr_die("mmap");
	if (write_mbps > 0) {
		npages = big_len / 4096;
		gen = calloc(npages ? npages : 1, sizeof(*gen));
		if (!gen)
			fr_die("calloc");
		if ((drop || move || holes) && !(zeroed = calloc(npages ? npages : 1, 1)))
			fr_die("calloc");
		for (size_t p = 0; p < npages; p++)
			fill_page(p);
		for (size_t p = 0; holes && p + 16 <= npages; p += 64) {
			if (madvise(big + p * 4096, 16 * 4096, MADV_DONTNEED))
				fr_die("madvise");
			memset(zeroed + p, 1, 16);
		}
	} else {
		fr_fill(big, big_len, 0x1234567);
	}
	big_sum = fr_checksum(big, big_len);
	if (child)
		fork_child();
	fr_ready();
	for (;;) {
		counter++;
		if (times_fd >= 0) {
			struct timespec ts;
			clock_gettime(CLOCK_REALTIME, &ts);
			char line[32];
			int n = snprintf(line, sizeof(line), "%lld\n",
					 (long long)ts.tv_sec * 1000000000ll + ts.tv_nsec);
			fr_write_all(times_fd, line, (size_t)n);
		}
		if (counter % 20 == 0)
			fr_log_tick(counter);
		if (gen)
			write_some();
		if (gen && read_mbps > 0)
			read_some();
		if (zeroed)
			drop_some(counter);
		if (usr2_pending) {
			usr2_pending = 0;
			fork_child();
		}
		if (fr_usr1_pending) {
			fr_usr1_pending = 0;
			check();
		}
		struct timespec d = {0, 1000000};
		nanosleep(&d, NULL);
	}
}
