/* Blocked in FUTEX_WAIT on a word that only the SIGUSR1 handler changes.
 *   futex STATEDIR wait   no timeout: each SIGUSR1 wakes it: "woken pid=P n=N"
 *   futex STATEDIR timed  400 ms timeouts, a tick after each; a timeout that comes before its
 *                         deadline is "BAD short wait"; SIGUSR1 also wakes it.
 * EINTR without the word changing is "BAD" in wait mode: the kernel restarts that call. */
#include "common.h"

#include <linux/futex.h>
#include <sys/syscall.h>

static volatile int word;

static void on_usr1(int sig)
{
	(void)sig;
	word = 1;
	fr_usr1_count++;
}

static long futex_wait(volatile int *addr, int val, const struct timespec *ts)
{
	return syscall(SYS_futex, addr, FUTEX_WAIT_PRIVATE, val, ts, NULL, 0);
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	int timed = argc > 2 && !strcmp(argv[2], "timed");
	fr_install(SIGUSR1, on_usr1, SA_RESTART);
	unsigned long counter = 0, woken = 0;
	fr_ready();
	for (;;) {
		double deadline = fr_now() + 0.4;
		while (word == 0) {
			long r;
			if (timed) {
				double left = deadline - fr_now();
				if (left <= 0) {
					errno = ETIMEDOUT;
					r = -1;
				} else {
					struct timespec ts = {(time_t)left,
							      (long)((left - (time_t)left) * 1e9)};
					r = futex_wait(&word, 0, &ts);
				}
			} else {
				r = futex_wait(&word, 0, NULL);
			}
			int e = errno;
			if (word != 0)
				break;
			if (r == -1 && e == ETIMEDOUT) {
				if (fr_now() < deadline - 0.001)
					fr_status("BAD short wait");
				counter++;
				fr_log_tick(counter);
				deadline = fr_now() + 0.4;
			} else if (r == -1 && e == EINTR && !timed) {
				fr_status("BAD futex EINTR without a signal");
			} else if (r == 0) {
				fr_status("spurious wakeup");
			}
		}
		woken++;
		word = 0;
		fr_status("woken pid=%d n=%lu counter=%lu", (int)getpid(), woken, counter);
	}
}
