/* The general victim: a counter in memory logged every 20 ms, a 32 MiB buffer with a known
 * compat-object: anonymous memory, a file offset, a signal handler, umask, cwd, rlimits
 * checksum, a data file read partially whose offset must carry on, a SIGUSR1 handler, and
 * non-default umask, cwd and rlimits for the test to compare through /proc.
 *
 * On SIGUSR1 it appends to the status file:
 *   ok pid=P counter=N sum=S off=O usr1=K
 * or BAD followed by what is wrong. When stdout is a terminal it also writes "tty-ok pid=P"
 * there, so that a test holding the pty master can see that the terminal still works.
 */
#include "common.h"

#include <sys/resource.h>

#define BUF_SIZE (32u << 20)
#define DATA_LEN 65536L
#define DATA_FIRST_READ 1000
#define DATA_STEP 16

static unsigned char *big;
static uint64_t big_sum;
static int data_fd;
static long data_off;
static unsigned long counter;
static char stack_canary[64] = "the data segment is restored as it was";

static void check(void)
{
	char bad[512] = "";
	uint64_t sum = fr_checksum(big, BUF_SIZE);
	if (sum != big_sum)
		snprintf(bad, sizeof(bad), "checksum %016llx != %016llx", (unsigned long long)sum,
			 (unsigned long long)big_sum);
	off_t cur = lseek(data_fd, 0, SEEK_CUR);
	if (!bad[0] && cur != data_off)
		snprintf(bad, sizeof(bad), "data offset %lld != %ld", (long long)cur, data_off);
	unsigned char chunk[DATA_STEP];
	ssize_t n = read(data_fd, chunk, sizeof(chunk));
	if (!bad[0] && n != DATA_STEP)
		snprintf(bad, sizeof(bad), "data read returned %zd", n);
	for (int i = 0; !bad[0] && i < DATA_STEP; i++)
		if (chunk[i] != fr_data_byte(data_off + i))
			snprintf(bad, sizeof(bad), "data byte at %ld is %u, not %u", data_off + i,
				 chunk[i], fr_data_byte(data_off + i));
	if (n > 0)
		data_off += n;
	if (data_off + DATA_STEP > DATA_LEN) {
		lseek(data_fd, DATA_FIRST_READ, SEEK_SET);
		data_off = DATA_FIRST_READ;
	}
	if (!bad[0] && getpid() != fr_pid0)
		snprintf(bad, sizeof(bad), "getpid %d != %d", (int)getpid(), (int)fr_pid0);
	if (!bad[0] && strcmp(stack_canary, "the data segment is restored as it was"))
		snprintf(bad, sizeof(bad), "data segment changed");
	if (bad[0])
		fr_status("BAD %s", bad);
	else
		fr_status("ok pid=%d counter=%lu sum=%016llx off=%ld usr1=%d", (int)getpid(), counter,
			  (unsigned long long)sum, data_off, (int)fr_usr1_count);
	if (isatty(1)) {
		char line[64];
		int len = snprintf(line, sizeof(line), "tty-ok pid=%d\n", (int)getpid());
		fr_write_all(1, line, (size_t)len);
	}
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);

	big = malloc(BUF_SIZE);
	if (!big)
		fr_die("malloc");
	fr_fill(big, BUF_SIZE, 0x1234567 ^ (uint64_t)getpid());
	big_sum = fr_checksum(big, BUF_SIZE);

	fr_write_data_file("data", DATA_LEN);
	data_fd = fr_open_in_dir("data", O_RDONLY, 0);
	unsigned char first[DATA_FIRST_READ];
	if (read(data_fd, first, sizeof(first)) != DATA_FIRST_READ)
		fr_die("read data");
	data_off = DATA_FIRST_READ;

	umask(027);
	if (chdir(fr_dir))
		fr_die("chdir");
	struct rlimit nofile = {777, 4096};
	if (setrlimit(RLIMIT_NOFILE, &nofile))
		fr_die("setrlimit nofile");
	struct rlimit core = {0, 1234567 * 4096ul};
	if (setrlimit(RLIMIT_CORE, &core))
		fr_die("setrlimit core");
	struct rlimit mq = {4321, 819200};
	if (setrlimit(RLIMIT_MSGQUEUE, &mq))
		fr_die("setrlimit msgqueue");

	fr_status("sum=%016llx", (unsigned long long)big_sum);
	fr_ready();
	for (;;) {
		if (fr_usr1_pending) {
			fr_usr1_pending = 0;
			check();
		}
		counter++;
		fr_log_tick(counter);
		struct timespec ts = {0, 20 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
}
