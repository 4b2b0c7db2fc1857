/* Has a child that pauses forever and sits in wait4() for it. After a restore as a single
 * process the child is no longer its child: the kernel's answer is ECHILD. Either way the result
 * is reported ("wait4 errno=ECHILD" or "wait4 pid=..."), then the victim counts on. */
#include "common.h"

#include <sys/wait.h>

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	fr_install(SIGUSR1, fr_usr1_reporting_handler, SA_RESTART);
	pid_t child = fork();
	if (child < 0)
		fr_die("fork");
	if (child == 0) {
		for (;;)
			pause();
	}
	fr_status("child pid=%d", (int)child);
	fr_ready();
	int st = 0;
	pid_t r = wait4(child, &st, 0, NULL);
	if (r < 0)
		fr_status("wait4 errno=%s", errno == ECHILD ? "ECHILD" : strerror(errno));
	else
		fr_status("wait4 pid=%d status=%#x", (int)r, st);
	fr_install(SIGUSR1, fr_usr1_handler, SA_RESTART);
	fr_usr1_pending = 0;
	unsigned long counter = 0;
	for (;;) {
		if (fr_usr1_pending) {
			fr_usr1_pending = 0;
			fr_status("ok pid=%d counter=%lu", (int)getpid(), counter);
		}
		counter++;
		fr_log_tick(counter);
		struct timespec ts = {0, 20 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
}
