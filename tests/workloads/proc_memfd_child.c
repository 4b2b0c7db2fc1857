/* proc_memfd_child STATEDIR
 *
 * A memfd whose only descriptor is held by a child: the parent created it, wrote a pattern,
 * mapped it shared and closed its descriptor; the child keeps the descriptor. On SIGUSR1 the
 * parent asks the child (a byte on a pipe) to pwrite a counter at offset 4096 through its
 * descriptor and checks it appears in its own mapping, that the pattern is intact, and that
 * the child's descriptor still names the memfd (its /proc link). Dump it with --tree.
 * Reports "ok round=N" or "BAD ...".
 */
#include "common.h"
#include <sys/mman.h>
#include <sys/prctl.h>

#define LEN (64 * 1024)

static unsigned char *map;
static int req[2], ans[2];
static pid_t child;
static int memfd_no;

static void check(void)
{
	static int round;
	round++;
	for (int i = 0; i < 4096; i++)
		if (map[i] != (unsigned char)(i * 13))
			return fr_status("BAD pattern byte %d is %d", i, map[i]);
	char c = (char)round, r;
	if (write(req[1], &c, 1) != 1 || read(ans[0], &r, 1) != 1 || r != 'y')
		return fr_status("BAD the child did not write");
	if (map[4096] != (unsigned char)round)
		return fr_status("BAD the child's write (%d) is not in the shared mapping (%d)", round,
				 map[4096]);
	char path[64], link[256];
	snprintf(path, sizeof(path), "/proc/%d/fd/%d", (int)child, memfd_no);
	ssize_t n = readlink(path, link, sizeof(link) - 1);
	link[n < 0 ? 0 : n] = 0;
	if (!strstr(link, "memfd:proc_memfd_child"))
		return fr_status("BAD the child's fd %d is %s", memfd_no, link);
	fr_status("ok round=%d", round);
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	int m = memfd_create("proc_memfd_child", 0);
	if (m < 0 || ftruncate(m, LEN) || pipe(req) || pipe(ans))
		fr_die("setup");
	map = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_SHARED, m, 0);
	if (map == MAP_FAILED)
		fr_die("mmap");
	for (int i = 0; i < 4096; i++)
		map[i] = (unsigned char)(i * 13);
	memfd_no = m;
	child = fork();
	if (child < 0)
		fr_die("fork");
	if (child == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		munmap(map, LEN);
		for (;;) {
			char c;
			if (read(req[0], &c, 1) != 1)
				continue;
			char ok = pwrite(m, &c, 1, 4096) == 1 ? 'y' : 'n';
			(void)!write(ans[1], &ok, 1);
		}
	}
	close(m);
	fr_ready();
	for (unsigned long tick = 0;; tick++) {
		if (fr_usr1_pending) {
			fr_usr1_pending = 0;
			check();
		}
		fr_log_tick(tick);
		usleep(10000);
	}
}
