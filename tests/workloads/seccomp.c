/* seccomp STATEDIR filter|strict
 * compat-object: a seccomp filter
 * compat-args: filter
 *
 * filter: no_new_privs, then two stacked filters: the first denies getpriority(2) with EPERM,
 *         the second allows everything (so the order matters). SIGUSR1 reports
 *         "ok filtered=1" when getpriority still fails with EPERM.
 * strict: strict mode after ready: only read, write, _exit and sigreturn; it counts by
 *         spinning. SIGUSR1 reports "ok filtered=strict".
 */
#include "common.h"
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

static void install(struct sock_filter *f, unsigned short n)
{
	struct sock_fprog prog = {.len = n, .filter = f};
	if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog))
		fr_die("seccomp filter");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	int strict = argc > 2 && !strcmp(argv[2], "strict");
	if (!strict) {
		struct sock_filter deny[] = {
			BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
			BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_getpriority, 0, 1),
			BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
			BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		};
		struct sock_filter allow[] = {BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)};
		if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
			fr_die("no_new_privs");
		install(deny, 4);
		install(allow, 1);
	}
	fr_ready();
	if (strict && prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT, 0, 0, 0))
		fr_die("seccomp strict");
	for (unsigned long tick = 1;; tick++) {
		if (strict) {
			for (volatile unsigned long i = 0; i < 20000000ul; i++)
				;
		} else {
			struct timespec ts = {0, 20 * 1000 * 1000};
			nanosleep(&ts, NULL);
		}
		fr_log_tick(tick);
		if (!fr_usr1_pending)
			continue;
		fr_usr1_pending = 0;
		if (strict) {
			fr_status_sigsafe("ok filtered=strict", 0);
			continue;
		}
		errno = 0;
		long r = syscall(SYS_getpriority, 0, 0);
		if (r == -1 && errno == EPERM)
			fr_status("ok filtered=1");
		else
			fr_status("BAD getpriority returned %ld errno %d", r, errno);
	}
}
