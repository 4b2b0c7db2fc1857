/* Anonymous memory written then made read-only with mprotect: the bytes stay and a write still
 * faults (SIGSEGV with SEGV_ACCERR).
 * compat-object: written anonymous memory made read-only
 */
#include "common.h"

#include <setjmp.h>
#include <sys/mman.h>

static unsigned char *m;
static sigjmp_buf jb;
static volatile int code;

static void on_segv(int sig, siginfo_t *si, void *ctx)
{
	(void)sig;
	(void)ctx;
	code = si->si_code;
	siglongjmp(jb, 1);
}

static const char *check(void)
{
	for (int i = 0; i < 8192; i++)
		if (m[i] != (unsigned char)(i * 11))
			return "bytes differ";
	code = 0;
	if (!sigsetjmp(jb, 1)) {
		*(volatile unsigned char *)(m + 10) = 1;
		return "a write to the read-only area succeeded";
	}
	if (code != SEGV_ACCERR)
		return "the write fault is not SEGV_ACCERR";
	return NULL;
}

static void setup(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_segv;
	sa.sa_flags = SA_SIGINFO | SA_NODEFER;
	sigaction(SIGSEGV, &sa, NULL);
	m = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	for (int i = 0; i < 8192; i++)
		m[i] = (unsigned char)(i * 11);
	mprotect(m, 8192, PROT_READ);
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
