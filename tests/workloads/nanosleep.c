/* Sits in nanosleep (300 ms at a time) and logs a tick after each full sleep. A sleep that ends
 * compat-object: a sleep interrupted by the checkpoint
 * early is a lost sleep: "BAD short sleep". EINTR (from SIGUSR1 or a restore that chose EINTR) is
 * answered by sleeping the rest up to the original deadline. */
#include "common.h"

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	fr_install(SIGUSR1, fr_usr1_handler, 0);
	unsigned long counter = 0;
	fr_ready();
	for (;;) {
		double deadline = fr_now() + 0.3;
		for (;;) {
			double left = deadline - fr_now();
			if (left <= 0)
				break;
			struct timespec req = {(time_t)left, (long)((left - (time_t)left) * 1e9)};
			int r = nanosleep(&req, NULL);
			if (r == 0)
				break;
			if (errno != EINTR) {
				fr_status("BAD nanosleep: %s", strerror(errno));
				break;
			}
			if (fr_usr1_pending) {
				fr_usr1_pending = 0;
				fr_status("ok pid=%d counter=%lu usr1=%d", (int)getpid(), counter,
					  (int)fr_usr1_count);
			}
		}
		double late = fr_now() - deadline;
		if (late < -0.001)
			fr_status("BAD short sleep by %.3f s", -late);
		counter++;
		fr_log_tick(counter);
	}
}
