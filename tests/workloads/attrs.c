/* attrs STATEDIR
 * compat-object: process attributes: personality, nice, name, timer slack, affinity
 *
 * Sets process attributes and timers, then ticks. On SIGUSR1 it checks from inside that they
 * are all still in force and the timers still fire:
 *   an ITIMER_REAL every 20 ms (SIGALRM), a POSIX timer on CLOCK_MONOTONIC every 10 ms
 *   (SIGRTMIN) whose id must still work, no_new_privs, child subreaper, not dumpable,
 *   CAP_NET_RAW dropped from the bounding and effective sets, nice 5, CPU affinity {0}.
 * Reports "ok alarms=N rt=M timer=ID".
 */
#include "common.h"
#include <sched.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <linux/capability.h>

static volatile sig_atomic_t alarms, rt;
static timer_t timer;

static void on_alarm(int s) { (void)s; alarms++; }
static void on_rt(int s) { (void)s; rt++; }

static int capget_eff(unsigned cap)
{
	struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
	struct __user_cap_data_struct d[2];
	if (syscall(SYS_capget, &h, d))
		return -1;
	return (d[cap / 32].effective >> (cap % 32)) & 1;
}

static void drop_net_raw(void)
{
	struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
	struct __user_cap_data_struct d[2];
	if (syscall(SYS_capget, &h, d))
		fr_die("capget");
	d[0].effective &= ~(1u << CAP_NET_RAW);
	if (syscall(SYS_capset, &h, d))
		fr_die("capset");
	if (prctl(PR_CAPBSET_DROP, CAP_NET_RAW, 0, 0, 0))
		fr_die("PR_CAPBSET_DROP");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	fr_install(SIGALRM, on_alarm, SA_RESTART);
	fr_install(SIGRTMIN, on_rt, SA_RESTART);
	struct itimerval it = {{0, 20000}, {0, 20000}};
	if (setitimer(ITIMER_REAL, &it, NULL))
		fr_die("setitimer");
	struct sigevent ev;
	memset(&ev, 0, sizeof(ev));
	ev.sigev_notify = SIGEV_SIGNAL;
	ev.sigev_signo = SIGRTMIN;
	/* Burn a few ids so the one kept is not simply the first. */
	timer_t spare[3];
	for (int i = 0; i < 3; i++)
		if (timer_create(CLOCK_MONOTONIC, &ev, &spare[i]))
			fr_die("timer_create");
	if (timer_create(CLOCK_MONOTONIC, &ev, &timer))
		fr_die("timer_create");
	for (int i = 0; i < 3; i++)
		timer_delete(spare[i]);
	struct itimerspec ts = {{0, 10000000}, {0, 10000000}};
	if (timer_settime(timer, 0, &ts, NULL))
		fr_die("timer_settime");
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) ||
	    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0))
		fr_die("prctl");
	drop_net_raw();
	if (setpriority(PRIO_PROCESS, 0, 5))
		fr_die("setpriority");
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(0, &set);
	if (sched_setaffinity(0, sizeof(set), &set))
		fr_die("sched_setaffinity");
	fr_ready();
	for (unsigned long tick = 1;; tick++) {
		fr_log_tick(tick);
		usleep(20000);
		if (!fr_usr1_pending)
			continue;
		fr_usr1_pending = 0;
		long a0 = alarms, r0 = rt;
		/* Signals cut sleeps short: sleep until 150 ms have really passed. */
		for (double until = fr_now() + 0.15; fr_now() < until;)
			usleep(10000);
		struct itimerspec cur;
		char bad[128] = "";
		if (alarms <= a0)
			snprintf(bad, sizeof(bad), "itimer stopped");
		else if (rt <= r0)
			snprintf(bad, sizeof(bad), "posix timer stopped");
		else if (timer_gettime(timer, &cur) || cur.it_interval.tv_nsec != 10000000)
			snprintf(bad, sizeof(bad), "timer id gone");
		else if (prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1)
			snprintf(bad, sizeof(bad), "no_new_privs");
		else if (prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) != 0)
			snprintf(bad, sizeof(bad), "dumpable");
		else if (prctl(PR_CAPBSET_READ, CAP_NET_RAW, 0, 0, 0) != 0 || capget_eff(CAP_NET_RAW) != 0)
			snprintf(bad, sizeof(bad), "cap_net_raw");
		else if (capget_eff(CAP_SYS_ADMIN) != 1)
			snprintf(bad, sizeof(bad), "cap_sys_admin lost");
		else {
			int sub = 0;
			prctl(PR_GET_CHILD_SUBREAPER, &sub, 0, 0, 0);
			errno = 0;
			int nice = getpriority(PRIO_PROCESS, 0);
			cpu_set_t now;
			sched_getaffinity(0, sizeof(now), &now);
			if (sub != 1)
				snprintf(bad, sizeof(bad), "subreaper");
			else if (nice != 5)
				snprintf(bad, sizeof(bad), "nice %d", nice);
			else if (CPU_COUNT(&now) != 1 || !CPU_ISSET(0, &now))
				snprintf(bad, sizeof(bad), "affinity");
		}
		if (bad[0])
			fr_status("BAD %s", bad);
		else
			fr_status("ok alarms=%ld rt=%ld timer=%ld", (long)alarms, (long)rt, (long)(intptr_t)timer);
	}
}
