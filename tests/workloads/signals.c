/* Signal state: SIGUSR1 runs on an alternate stack (SA_ONSTACK); SIGUSR2 has SA_SIGINFO|SA_RESTART
 * compat-object: signal handlers, alternate stack, pending and blocked signals
 * and SIGWINCH in its sa_mask; SIGPIPE is ignored; SIGRTMIN+2, SIGRTMIN+3 and SIGWINCH are
 * blocked; SIGRTMIN+2 is pending twice for the thread (raise), SIGRTMIN+3 once for the process
 * (sigqueue with value 4242). Nothing is checked before the checkpoint, so that the pending
 * signals stay pending until then.
 * The first SIGUSR1 checks all of that, then unblocks the RT signals and checks that their
 * handlers ran with the right siginfo: "ok pending-delivered pid=P usr2=N". Later ones:
 * "ok pid=P usr2=N". Anything else: "BAD what". */
#include "common.h"

#include <sys/mman.h>

#define ALT_SIZE (64 * 1024)

static unsigned char *alt;
static volatile sig_atomic_t on_alt = -1;
static volatile sig_atomic_t usr2_count, rt2_count, rt3_count, rt3_value, rt3_code;
static int first = 1;

static void on_usr1(int sig)
{
	(void)sig;
	unsigned char local;
	on_alt = (&local >= alt && &local < alt + ALT_SIZE);
	fr_usr1_pending = 1;
	fr_usr1_count++;
}

static void on_usr2(int sig, siginfo_t *si, void *ctx)
{
	(void)sig;
	(void)si;
	(void)ctx;
	usr2_count++;
}

static void on_rt2(int sig)
{
	(void)sig;
	rt2_count++;
}

static void on_rt3(int sig, siginfo_t *si, void *ctx)
{
	(void)sig;
	(void)ctx;
	rt3_count++;
	rt3_value = si->si_value.sival_int;
	rt3_code = si->si_code;
}

static const char *check(void)
{
	static char why[256];
	if (on_alt != 1)
		return "SIGUSR1 handler did not run on the alternate stack";
	stack_t ss;
	if (sigaltstack(NULL, &ss) || ss.ss_sp != alt || ss.ss_size != ALT_SIZE || ss.ss_flags != 0) {
		snprintf(why, sizeof(why), "sigaltstack %p %zu %d", ss.ss_sp, ss.ss_size, ss.ss_flags);
		return why;
	}
	struct sigaction sa;
	sigaction(SIGUSR2, NULL, &sa);
	if (sa.sa_sigaction != on_usr2 || !(sa.sa_flags & SA_SIGINFO) || !(sa.sa_flags & SA_RESTART) ||
	    !sigismember(&sa.sa_mask, SIGWINCH))
		return "SIGUSR2 action";
	sigaction(SIGUSR1, NULL, &sa);
	if (sa.sa_handler != on_usr1 || !(sa.sa_flags & SA_ONSTACK))
		return "SIGUSR1 action";
	sigaction(SIGPIPE, NULL, &sa);
	if (sa.sa_handler != SIG_IGN)
		return "SIGPIPE is not ignored";
	sigaction(SIGTERM, NULL, &sa);
	if (sa.sa_handler != SIG_DFL)
		return "SIGTERM is not default";
	sigset_t mask;
	sigprocmask(SIG_SETMASK, NULL, &mask);
	if (!sigismember(&mask, SIGWINCH) || sigismember(&mask, SIGUSR1) || sigismember(&mask, SIGUSR2))
		return "signal mask";
	if (first) {
		if (!sigismember(&mask, SIGRTMIN + 2) || !sigismember(&mask, SIGRTMIN + 3))
			return "RT signals are not blocked";
		sigset_t pend;
		sigpending(&pend);
		if (!sigismember(&pend, SIGRTMIN + 2) || !sigismember(&pend, SIGRTMIN + 3))
			return "RT signals are not pending";
		if (sigismember(&pend, SIGWINCH))
			return "SIGWINCH is pending";
		if (rt2_count || rt3_count)
			return "RT handlers ran too early";
		sigset_t rt;
		sigemptyset(&rt);
		sigaddset(&rt, SIGRTMIN + 2);
		sigaddset(&rt, SIGRTMIN + 3);
		sigprocmask(SIG_UNBLOCK, &rt, NULL);
		if (rt2_count != 2) {
			snprintf(why, sizeof(why), "SIGRTMIN+2 delivered %d times, not 2", (int)rt2_count);
			return why;
		}
		if (rt3_count != 1 || rt3_value != 4242 || rt3_code != SI_QUEUE) {
			snprintf(why, sizeof(why), "SIGRTMIN+3 count %d value %d code %d", (int)rt3_count,
				 (int)rt3_value, (int)rt3_code);
			return why;
		}
	}
	return NULL;
}

static void install(int sig, void *fn, int flags, int masked)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	if (flags & SA_SIGINFO)
		sa.sa_sigaction = fn;
	else
		sa.sa_handler = fn;
	sa.sa_flags = flags;
	sigemptyset(&sa.sa_mask);
	if (masked)
		sigaddset(&sa.sa_mask, masked);
	if (sigaction(sig, &sa, NULL))
		fr_die("sigaction");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	alt = mmap(NULL, ALT_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (alt == MAP_FAILED)
		fr_die("mmap");
	stack_t ss = {.ss_sp = alt, .ss_size = ALT_SIZE, .ss_flags = 0};
	if (sigaltstack(&ss, NULL))
		fr_die("sigaltstack");
	install(SIGUSR1, (void *)on_usr1, SA_ONSTACK | SA_RESTART, 0);
	install(SIGUSR2, (void *)on_usr2, SA_SIGINFO | SA_RESTART, SIGWINCH);
	install(SIGRTMIN + 2, (void *)on_rt2, 0, 0);
	install(SIGRTMIN + 3, (void *)on_rt3, SA_SIGINFO, 0);
	signal(SIGPIPE, SIG_IGN);
	sigset_t block;
	sigemptyset(&block);
	sigaddset(&block, SIGRTMIN + 2);
	sigaddset(&block, SIGRTMIN + 3);
	sigaddset(&block, SIGWINCH);
	sigprocmask(SIG_BLOCK, &block, NULL);
	raise(SIGRTMIN + 2);
	raise(SIGRTMIN + 2);
	union sigval v = {.sival_int = 4242};
	if (sigqueue(getpid(), SIGRTMIN + 3, v))
		fr_die("sigqueue");
	fr_ready();
	unsigned long counter = 0;
	for (;;) {
		if (fr_usr1_pending) {
			fr_usr1_pending = 0;
			const char *why = check();
			if (why)
				fr_status("BAD %s", why);
			else
				fr_status("ok %spid=%d usr2=%d counter=%lu", first ? "pending-delivered " : "",
					  (int)getpid(), (int)usr2_count, counter);
			first = 0;
		}
		counter++;
		fr_log_tick(counter);
		struct timespec ts = {0, 20 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
}
