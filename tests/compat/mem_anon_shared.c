/* Anonymous shared mapping (MAP_SHARED|MAP_ANONYMOUS): contents, and still shared with a child
 * forked after the restore (the child's write is seen by the parent).
 * compat-object: anonymous shared mapping
 */
#include "common.h"

#include <sys/mman.h>
#include <sys/wait.h>

#define PS 4096ul
#define NP 16
static unsigned char *m;
static uint64_t sum;

static const char *check(void)
{
	if (fr_checksum(m, (NP - 1) * PS) != sum)
		return "contents differ";
	unsigned char *last = m + (NP - 1) * PS;
	last[0] = 0;
	pid_t c = fork();
	if (c < 0)
		return "fork";
	if (c == 0) {
		last[0] = 0x5a;
		_exit(0);
	}
	int st;
	waitpid(c, &st, 0);
	if (last[0] != 0x5a)
		return "a child's write to the shared mapping is not seen by the parent (mapping is private)";
	unsigned long s = 0, e = 0;
	char line[512];
	FILE *f = fopen("/proc/self/maps", "r");
	int shared = 0;
	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "%lx-%lx", &s, &e) == 2 && (unsigned long)m >= s && (unsigned long)m < e)
			shared = strstr(line, "rw-s") != NULL;
	if (f)
		fclose(f);
	if (!shared)
		return "maps does not show rw-s";
	return NULL;
}

static void setup(void)
{
	m = mmap(NULL, NP * PS, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED)
		fr_die("mmap");
	fr_fill(m, (NP - 1) * PS, 99);
	sum = fr_checksum(m, (NP - 1) * PS);
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
