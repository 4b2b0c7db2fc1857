/* A parent with two forked children, each keeping a checksummed heap and a counter while it
 * writes, for a live `ferry migrate --tree`:
 *   tree_heaps STATEDIR [MIB]
 *
 * The parent fills MIB MiB (default 16) of anonymous memory with pseudo-random pages and
 * notes the sum of its 64-bit words before it forks: the children share those pages
 * copy-on-write. Then every process, every tick (10 ms), rewrites 8 pages of its own heap
 * (chosen by its own generator) with new contents, keeping the sum up to date, and counts
 * the tick in its counter, kept in a global and in the heap's first word (the sum follows
 * that too). So a page that the copy got in an older version than the last one written
 * makes the sum differ.
 *
 * SIGUSR1 to any of them: it adds up its whole heap, compares with the sum it kept, checks
 * the counter in the heap against its own, its PID (as when it started) and, the children,
 * their parent; appends "ok ROLE pid=P counter=N" or "BAD ROLE ..." to STATEDIR/status.
 * Each appends "ready ROLE pid=P" once running.
 * SIGUSR2 to the parent: it sends SIGUSR2 to the children, which check themselves, append
 * "ROLE exits S" and exit 20+k (1 if the check failed); it waits for them, checks their
 * statuses and itself, appends "parent exits S" and exits 42 (1 if anything was wrong).
 */
#include "common.h"

#include <sys/mman.h>
#include <sys/wait.h>

static unsigned char *heap;
static size_t heap_len;
static uint64_t sum;
static uint64_t counter;
static uint64_t rng;
static const char *role = "parent";
static pid_t parent_pid;
static volatile sig_atomic_t usr2;

static void on_usr2(int sig)
{
	(void)sig;
	usr2 = 1;
}

static uint64_t words(const unsigned char *p, size_t len)
{
	uint64_t s = 0;
	for (size_t i = 0; i + 8 <= len; i += 8) {
		uint64_t w;
		memcpy(&w, p + i, 8);
		s += w;
	}
	return s;
}

static void set_counter(uint64_t v)
{
	uint64_t old;
	memcpy(&old, heap, 8);
	sum -= old;
	memcpy(heap, &v, 8);
	sum += v;
	counter = v;
}

static void rewrite_page(size_t i)
{
	unsigned char *p = heap + i * 4096;
	sum -= words(p, 4096);
	fr_fill(p, 4096, fr_xorshift(&rng));
	sum += words(p, 4096);
}

/* 1 if the heap and counter are as kept; else why in `why`. */
static int heap_ok(char *why, size_t len)
{
	uint64_t now = words(heap, heap_len);
	if (now != sum) {
		snprintf(why, len, "heap sum %016llx, kept %016llx", (unsigned long long)now,
			 (unsigned long long)sum);
		return 0;
	}
	uint64_t c;
	memcpy(&c, heap, 8);
	if (c != counter) {
		snprintf(why, len, "counter in the heap %llu, kept %llu", (unsigned long long)c,
			 (unsigned long long)counter);
		return 0;
	}
	if (getpid() != fr_pid0) {
		snprintf(why, len, "pid %d, was %d", (int)getpid(), (int)fr_pid0);
		return 0;
	}
	if (strcmp(role, "parent") && getppid() != parent_pid) {
		snprintf(why, len, "parent %d, not %d", (int)getppid(), (int)parent_pid);
		return 0;
	}
	return 1;
}

static int check(void)
{
	char why[160] = "";
	if (!heap_ok(why, sizeof(why))) {
		fr_status("BAD %s %s", role, why);
		return 0;
	}
	fr_status("ok %s pid=%d counter=%llu", role, (int)getpid(), (unsigned long long)counter);
	return 1;
}

static void tick(void)
{
	size_t pages = heap_len / 4096;
	for (int k = 0; k < 8; k++)
		rewrite_page(1 + (size_t)(fr_xorshift(&rng) % (pages - 1)));
	set_counter(counter + 1);
}

static void child(int k)
{
	role = k == 1 ? "child1" : "child2";
	fr_pid0 = getpid();
	rng = 0x9e3779b97f4a7c15ULL * (uint64_t)(k + 1);
	fr_status("ready %s pid=%d", role, (int)getpid());
	for (;;) {
		if (fr_usr1_pending) {
			fr_usr1_pending = 0;
			check();
		}
		if (usr2) {
			int ok = check();
			fr_status("%s exits %d", role, ok ? 20 + k : 1);
			exit(ok ? 20 + k : 1);
		}
		tick();
		usleep(10000);
	}
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	long mib = argc > 2 ? atol(argv[2]) : 16;
	if (mib < 1)
		mib = 1;
	heap_len = (size_t)mib << 20;
	fr_install(SIGUSR2, on_usr2, SA_RESTART);
	heap = mmap(NULL, heap_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (heap == MAP_FAILED)
		fr_die("mmap");
	fr_fill(heap, heap_len, 12345);
	sum = words(heap, heap_len);
	set_counter(0);
	rng = 777;
	parent_pid = getpid();
	pid_t kids[2];
	for (int k = 1; k <= 2; k++) {
		pid_t c = fork();
		if (c < 0)
			fr_die("fork");
		if (c == 0)
			child(k);
		kids[k - 1] = c;
	}
	fr_status("ready parent pid=%d", (int)getpid());
	for (unsigned long t = 0;; t++) {
		if (fr_usr1_pending) {
			fr_usr1_pending = 0;
			check();
		}
		if (usr2) {
			int code = 42;
			for (int k = 0; k < 2; k++)
				kill(kids[k], SIGUSR2);
			for (int k = 0; k < 2; k++) {
				int st = 0;
				if (waitpid(kids[k], &st, 0) != kids[k] || !WIFEXITED(st) ||
				    WEXITSTATUS(st) != 21 + k) {
					fr_status("BAD parent child %d ended with status %#x", k + 1, st);
					code = 1;
				}
			}
			if (!check())
				code = 1;
			fr_status("parent exits %d", code);
			exit(code);
		}
		tick();
		fr_log_tick(t);
		usleep(10000);
	}
}
