/* PROT_NONE guard pages on both sides of a buffer (the way thread stacks and allocators make
 * them): touching a guard still faults with SIGSEGV at that address; the buffer keeps its bytes.
 * compat-object: PROT_NONE guard pages
 */
#include "common.h"

#include <setjmp.h>
#include <sys/mman.h>

#define PS 4096ul
static unsigned char *m;
static sigjmp_buf jb;
static void *volatile fault_addr;

static void on_segv(int sig, siginfo_t *si, void *ctx)
{
	(void)sig;
	(void)ctx;
	fault_addr = si->si_addr;
	siglongjmp(jb, 1);
}

static const char *probe(volatile unsigned char *p)
{
	fault_addr = NULL;
	if (!sigsetjmp(jb, 1)) {
		(void)*p;
		return "reading a guard page did not fault";
	}
	if (fault_addr != (void *)p)
		return "the fault was at another address";
	return NULL;
}

static const char *check(void)
{
	const char *w;
	if ((w = probe(m)) || (w = probe(m + 5 * PS + 17)))
		return w;
	for (unsigned long i = PS; i < 5 * PS; i++)
		if (m[i] != (unsigned char)(i ^ (i >> 8)))
			return "buffer contents differ";
	return NULL;
}

static void setup(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_segv;
	sa.sa_flags = SA_SIGINFO | SA_NODEFER;
	sigaction(SIGSEGV, &sa, NULL);
	m = mmap(NULL, 6 * PS, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED)
		fr_die("mmap");
	for (unsigned long i = PS; i < 5 * PS; i++)
		m[i] = (unsigned char)(i ^ (i >> 8));
	mprotect(m, PS, PROT_NONE);
	mprotect(m + 5 * PS, PS, PROT_NONE);
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
