/* Descriptors with gaps and high numbers (RLIMIT_NOFILE lowered below the hard
 * limit, so it must come back as set): 3 free, 9, 1000, 15000.
 * compat-object: descriptor table with gaps and high numbers
 */
#include "common.h"

#include <sys/resource.h>

static const int nums[] = {9, 1000, 15000};
static char open_at_start[16000];

static void check(void)
{
	struct stat st;
	for (int i = 0; i < 3; i++) {
		if (fstat(nums[i], &st)) {
			fr_status("BAD fd %d missing: %s", nums[i], strerror(errno));
			return;
		}
		if (lseek(nums[i], 0, SEEK_CUR) != (off_t)(i + 1) * 10) {
			fr_status("BAD fd %d offset", nums[i]);
			return;
		}
	}
	for (int fd = 0; fd < 16000; fd++) {
		int open_now = fcntl(fd, F_GETFD) >= 0;
		if (open_now != open_at_start[fd]) {
			fr_status("BAD fd %d is %s now", fd, open_now ? "open" : "closed");
			return;
		}
	}
	struct rlimit rl;
	getrlimit(RLIMIT_NOFILE, &rl);
	if (rl.rlim_cur != 16000) {
		fr_status("BAD RLIMIT_NOFILE %llu", (unsigned long long)rl.rlim_cur);
		return;
	}
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	struct rlimit rl;
	getrlimit(RLIMIT_NOFILE, &rl);
	rl.rlim_cur = 16000;
	if (setrlimit(RLIMIT_NOFILE, &rl))
		fr_die("setrlimit");
	fr_write_data_file("data", 4096);
	for (int i = 0; i < 3; i++) {
		int f = fr_open_in_dir("data", O_RDONLY, 0);
		if (dup2(f, nums[i]) < 0)
			fr_die("dup2");
		close(f);
		lseek(nums[i], (i + 1) * 10, SEEK_SET);
	}
	for (int fd = 0; fd < 16000; fd++)
		open_at_start[fd] = fcntl(fd, F_GETFD) >= 0;
	fr_ready();
	for (unsigned long tick = 1;; tick++) {
		if (fr_usr1_pending) {
			fr_usr1_pending = 0;
			check();
		}
		fr_log_tick(tick);
		usleep(10000);
	}
}
