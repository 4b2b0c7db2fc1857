/* The migration victim: a buffer of MIB MiB with a known checksum, a counter in memory, and
 * optionally a mapped file (a library of its own, say) whose contents it checks.
 *
 *   migrate STATEDIR MIB [--times] [--map PATH] [--child] [--fork-on-usr2]
 *
 * With --child it forks a child at start, with --fork-on-usr2 one on each SIGUSR2 (each named
 * "migrate-child", sleeping, killed when the victim ends) and appends "forked pid=C".
 * Every millisecond it counts; every 20 counts it logs "tick N". With --times it appends the
 * wall-clock time (ns) to STATEDIR/times every millisecond, so the longest gap is its downtime.
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

static void check(void)
{
	char bad[512] = "";
	uint64_t sum = fr_checksum(big, big_len);
	if (sum != big_sum)
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
		fr_status("ok pid=%d counter=%lu sum=%016llx", (int)getpid(), counter,
			  (unsigned long long)sum);
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
	fr_fill(big, big_len, 0x1234567);
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
