/* An alternate signal stack with SS_AUTODISARM and a SA_ONSTACK handler for SIGUSR2: sigaltstack
 * reads back address, size and the flag; the handler runs on it and sees it disarmed inside.
 * compat-object: sigaltstack with SS_AUTODISARM
 */
#include "common.h"

#ifndef SS_AUTODISARM
#define SS_AUTODISARM (1U << 31)
#endif
#define SZ (64 * 1024)
static char *alt;
static volatile int on_alt, disarmed;

static void h(int sig)
{
	(void)sig;
	char local;
	on_alt = &local >= alt && &local < alt + SZ;
	stack_t s;
	sigaltstack(NULL, &s);
	disarmed = s.ss_flags == SS_DISABLE;
}

static const char *check(void)
{
	static char why[128];
	stack_t s;
	sigaltstack(NULL, &s);
	if (s.ss_sp != alt || s.ss_size != SZ || s.ss_flags != (int)SS_AUTODISARM) {
		snprintf(why, sizeof(why), "sigaltstack %p %zu flags %#x", s.ss_sp, s.ss_size, s.ss_flags);
		return why;
	}
	on_alt = disarmed = 0;
	raise(SIGUSR2);
	if (!on_alt)
		return "the handler did not run on the alternate stack";
	if (!disarmed)
		return "the stack was not disarmed inside the handler";
	return NULL;
}

static void setup(void)
{
	alt = malloc(SZ);
	stack_t s = {.ss_sp = alt, .ss_size = SZ, .ss_flags = (int)SS_AUTODISARM};
	if (sigaltstack(&s, NULL))
		fr_die("sigaltstack");
	fr_install(SIGUSR2, h, SA_ONSTACK);
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
