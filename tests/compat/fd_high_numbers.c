/* Descriptors with gaps and high numbers (RLIMIT_NOFILE lowered below the hard
 * limit, so it must come back as set): 3 free, 9, 1000, 15000.
 * compat-object: descriptor table with gaps and high numbers
 */
#include "common.h"

#include <sys/resource.h>

static const int nums[] = {9, 1000, 15000};

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
	int extra = 0;
	for (int fd = 0; fd < 20000; fd++) {
		if (fd == fr_status_fd || fd == fr_log_fd || fd == 9 || fd == 1000 || fd == 15000 || fd <= 2)
			continue;
		if (fcntl(fd, F_GETFD) >= 0)
			extra = fd;
	}
	if (extra) {
		fr_status("BAD unexpected fd %d open", extra);
		return;
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
