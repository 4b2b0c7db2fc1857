/* A parent with two forked children, for `ferry migrate --tree`:
 *   migrate_tree STATEDIR [--print]
 *
 * The parent fills PAGES pages (page i holds the byte i*7+1) before it forks: the children
 * share them copy-on-write. Child k (1, 2) then writes 100+k into its own copy of page k,
 * so each process sees its own contents. Child 1 writes "seq N\n" into a pipe every tick,
 * child 2 reads it and checks that N follows on from the last one (no line lost, none twice,
 * the bytes queued in the pipe at the migration included). With --print the parent writes
 * "parent tick N" to its stdout every tenth tick and child 2 "child2 got N" every tenth line:
 * their shared stdout is the caller's.
 *
 * SIGUSR1 to any of them: it checks its pages, its PID (as when it started), its parent
 * (the children: the parent's PID) and, child 2, the sequence, and appends
 * "ok ROLE pid=P ..." or "BAD ROLE ..." to STATEDIR/status. Each appends "ready ROLE pid=P"
 * once running.
 * SIGHUP to the parent: it sends SIGUSR2 to child 1 alone, waits for it (exit 21) and
 * goes on, appending "parent reaped child1 status=S".
 * SIGUSR2 to the parent: it sends SIGUSR2 to the children, which exit 20+k after 0.3 s;
 * it waits for them, checks their statuses and exits 42 (1 if a status was not the one
 * expected, with "BAD parent ..." in the status file).
 */
#include "common.h"

#include <sys/mman.h>
#include <sys/wait.h>

#define PAGES 64

static unsigned char *pages;
static volatile sig_atomic_t usr2;
static volatile sig_atomic_t hup;

static void on_hup(int sig)
{
	(void)sig;
	hup = 1;
}
static const char *role = "parent";
static pid_t parent_pid;

static void on_usr2(int sig)
{
	(void)sig;
	usr2 = 1;
}

static int pages_ok(int k, char *why, size_t len)
{
	for (int i = 0; i < PAGES; i++) {
		unsigned char want = (unsigned char)(i * 7 + 1);
		if (k > 0 && i == k)
			want = (unsigned char)(100 + k);
		for (int j = 0; j < 4096; j += 512) {
			if (pages[(size_t)i * 4096 + (size_t)j] != want) {
				snprintf(why, len, "page %d byte %d is %d, not %d", i, j,
					 pages[(size_t)i * 4096 + (size_t)j], want);
				return 0;
			}
		}
	}
	return 1;
}

static void check(int k, long last_seq, int seq_bad)
{
	char why[256] = "";
	if (!pages_ok(k, why, sizeof(why))) {
		fr_status("BAD %s pages: %s", role, why);
		return;
	}
	if (getpid() != fr_pid0) {
		fr_status("BAD %s pid %d, was %d", role, (int)getpid(), (int)fr_pid0);
		return;
	}
	if (k > 0 && getppid() != parent_pid) {
		fr_status("BAD %s parent %d, not %d", role, (int)getppid(), (int)parent_pid);
		return;
	}
	if (seq_bad) {
		fr_status("BAD %s sequence broke after %ld", role, last_seq);
		return;
	}
	fr_status("ok %s pid=%d seq=%ld", role, (int)getpid(), last_seq);
}

static void child(int k, int rd, int wr, int print)
{
	role = k == 1 ? "child1" : "child2";
	fr_pid0 = getpid();
	pages[(size_t)k * 4096] = (unsigned char)(100 + k);
	for (int j = 512; j < 4096; j += 512)
		pages[(size_t)k * 4096 + (size_t)j] = (unsigned char)(100 + k);
	if (k == 1)
		close(rd);
	else
		close(wr);
	fr_status("ready %s pid=%d", role, (int)getpid());
	long seq = 0, last = 0;
	int bad = 0;
	char line[64];
	size_t have = 0;
	double usr2_at = 0;
	if (k == 2)
		fcntl(rd, F_SETFL, O_NONBLOCK);
	for (unsigned long tick = 0;; tick++) {
		if (fr_usr1_pending) {
			fr_usr1_pending = 0;
			check(k, k == 1 ? seq : last, bad);
		}
		if (usr2 && usr2_at == 0)
			usr2_at = fr_now();
		if (usr2_at > 0 && fr_now() - usr2_at > 0.3)
			exit(20 + k);
		if (k == 1) {
			char out[32];
			int n = snprintf(out, sizeof(out), "seq %ld\n", ++seq);
			fr_write_all(wr, out, (size_t)n);
		} else {
			for (;;) {
				ssize_t n = read(rd, line + have, 1);
				if (n <= 0)
					break;
				if (line[have] != '\n') {
					if (have < sizeof(line) - 2)
						have++;
					continue;
				}
				line[have] = 0;
				have = 0;
				long got = strtol(line + 4, NULL, 10);
				if (got != last + 1)
					bad = 1;
				last = got;
				if (print && got % 10 == 0) {
					char out[48];
					int m = snprintf(out, sizeof(out), "child2 got %ld\n", got);
					fr_write_all(1, out, (size_t)m);
				}
			}
		}
		usleep(10000);
	}
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	int print = argc > 2 && !strcmp(argv[2], "--print");
	fr_install(SIGUSR2, on_usr2, SA_RESTART);
	fr_install(SIGHUP, on_hup, SA_RESTART);
	pages = mmap(NULL, PAGES * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (pages == MAP_FAILED)
		fr_die("mmap");
	for (int i = 0; i < PAGES; i++)
		memset(pages + (size_t)i * 4096, i * 7 + 1, 4096);
	parent_pid = getpid();
	int p[2];
	if (pipe(p))
		fr_die("pipe");
	pid_t kids[2];
	for (int k = 1; k <= 2; k++) {
		pid_t c = fork();
		if (c < 0)
			fr_die("fork");
		if (c == 0)
			child(k, p[0], p[1], print);
		kids[k - 1] = c;
	}
	close(p[0]);
	close(p[1]);
	fr_status("ready parent pid=%d", (int)getpid());
	int first = 0;
	int code = 42;
	for (unsigned long tick = 0;; tick++) {
		if (fr_usr1_pending) {
			fr_usr1_pending = 0;
			check(0, 0, 0);
		}
		if (hup && first == 0) {
			int st = 0;
			kill(kids[0], SIGUSR2);
			if (waitpid(kids[0], &st, 0) != kids[0] || !WIFEXITED(st) ||
			    WEXITSTATUS(st) != 21) {
				fr_status("BAD parent child 1 ended with status %#x", st);
				code = 1;
			}
			fr_status("parent reaped child1 status=%d", WEXITSTATUS(st));
			first = 1;
		}
		if (usr2) {
			for (int k = first; k < 2; k++)
				kill(kids[k], SIGUSR2);
			for (int k = first; k < 2; k++) {
				int st = 0;
				if (waitpid(kids[k], &st, 0) != kids[k] || !WIFEXITED(st) ||
				    WEXITSTATUS(st) != 21 + k) {
					fr_status("BAD parent child %d ended with status %#x", k + 1, st);
					code = 1;
				}
			}
			fr_status("parent exits %d", code);
			exit(code);
		}
		if (print && tick % 10 == 0) {
			char out[48];
			int n = snprintf(out, sizeof(out), "parent tick %lu\n", tick);
			fr_write_all(1, out, (size_t)n);
		}
		fr_log_tick(tick);
		usleep(10000);
	}
}
