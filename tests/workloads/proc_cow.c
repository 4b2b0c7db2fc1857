/* proc_cow STATEDIR
 *
 * 8 MiB of private anonymous memory filled by the parent, then a child forked that only
 * reads it: the pages are shared copy-on-write between the two (smaps Shared_Dirty). On
 * SIGUSR1 the parent checks its copy's checksum and reports "ok cow=ADDR sum=S" (the test reads
 * the sharing from outside); the child checks that its copy still has the checksum of the
 * fork and reports "ok child sum=S". On SIGUSR2 the parent writes into the first page of its
 * copy and reports "ok wrote sum=S" (the child must not see it: copy-on-write). Built with CHECK_SHARING (the conformance victim), it also
 * checks in its own smaps that the area is still shared (Shared_Clean + Shared_Dirty).
 * Dump it with --tree.
 */
#include "common.h"
#include <sys/mman.h>
#include <sys/prctl.h>

#define LEN (8u << 20)

static unsigned char *buf;
static uint64_t sum;
static volatile sig_atomic_t usr2_pending;

static void usr2_handler(int sig)
{
	(void)sig;
	usr2_pending = 1;
}

static long shared_kb(void)
{
	char line[256];
	long kb = 0, v;
	int inside = 0;
	unsigned long start;
	FILE *f = fopen("/proc/self/smaps", "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		char *sp = strchr(line, ' ');
		if (sp && sp[-1] != ':' && sscanf(line, "%lx-", &start) == 1)
			inside = start == (unsigned long)buf;
		else if (inside && (sscanf(line, "Shared_Clean: %ld", &v) == 1 ||
				    sscanf(line, "Shared_Dirty: %ld", &v) == 1))
			kb += v;
	}
	fclose(f);
	return kb;
}

static void check(void)
{
	uint64_t now = fr_checksum(buf, LEN);
	if (now != sum)
		return fr_status("BAD checksum %llx, was %llx", (unsigned long long)now,
				 (unsigned long long)sum);
#ifdef CHECK_SHARING
	long kb = shared_kb();
	if (kb < (long)(LEN >> 10))
		return fr_status("BAD only %ld KiB of the %u KiB area shared with the child", kb,
				 LEN >> 10);
#endif
	fr_status("ok cow=%lx sum=%llx", (unsigned long)buf, (unsigned long long)sum);
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	buf = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (buf == MAP_FAILED)
		fr_die("mmap");
	for (size_t i = 0; i < LEN; i += 8) {
		uint64_t v = i * 0x9e3779b97f4a7c15ull + 1;
		memcpy(buf + i, &v, 8);
	}
	sum = fr_checksum(buf, LEN);
	pid_t child = fork();
	if (child < 0)
		fr_die("fork");
	if (child == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		for (;;) {
			volatile unsigned char c = buf[0];
			(void)c;
			if (fr_usr1_pending) {
				fr_usr1_pending = 0;
				uint64_t now = fr_checksum(buf, LEN);
				if (now != sum)
					fr_status("BAD child checksum %llx, was %llx",
						  (unsigned long long)now, (unsigned long long)sum);
				else
					fr_status("ok child sum=%llx", (unsigned long long)sum);
			}
			pause();
		}
	}
	fr_install(SIGUSR2, usr2_handler, SA_RESTART);
	fr_ready();
	for (unsigned long tick = 0;; tick++) {
		if (fr_usr1_pending) {
			fr_usr1_pending = 0;
			check();
		}
		if (usr2_pending) {
			usr2_pending = 0;
			memset(buf, 0xa5, 64);
			sum = fr_checksum(buf, LEN);
			fr_status("ok wrote sum=%llx", (unsigned long long)sum);
		}
		fr_log_tick(tick);
		usleep(10000);
	}
}
