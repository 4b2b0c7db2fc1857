/* fdkinds_sigio STATEDIR [outside]
 *
 * Signal-driven I/O on three pipes, read ends O_ASYNC|O_NONBLOCK:
 *   pid:  owner F_OWNER_PID  = the process,           signal SIGRTMIN+2
 *   tid:  owner F_OWNER_TID  = its second thread,     signal SIGRTMIN+3
 *   pgrp: owner F_OWNER_PGRP = the group it leads,    signal SIGIO (F_SETSIG 0)
 * Reports "fds pid=R tid=R pgrp=R" (the read ends). On SIGUSR1 it checks F_GETOWN_EX,
 * F_GETSIG and O_ASYNC of each, then writes a byte into each pipe and checks that the chosen
 * signal arrives (with si_fd for the queued ones), the TID-owned one in the second thread.
 * Reports "ok checks=N".
 * With "outside", a fourth pipe's owner is the parent (not part of a restore); reports
 * "fds outside=R".
 */
#include "common.h"
#include <pthread.h>
#include <sys/syscall.h>

static int rd[3], wr[3];
static int want_sig[3];
static volatile pid_t worker_tid;
static volatile sig_atomic_t got[3], got_fd[3], got_tid[3];

static void on_io(int sig, siginfo_t *si, void *uc)
{
	(void)uc;
	for (int i = 0; i < 3; i++) {
		if (sig == want_sig[i]) {
			got[i]++;
			got_fd[i] = si->si_fd;
			got_tid[i] = (pid_t)syscall(SYS_gettid);
		}
	}
}

static void *worker(void *arg)
{
	(void)arg;
	worker_tid = (pid_t)syscall(SYS_gettid);
	/* Only this thread takes the TID-owned signal: the others block it. */
	for (;;)
		pause();
	return NULL;
}

static void install(int sig)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_io;
	sa.sa_flags = SA_SIGINFO | SA_RESTART;
	if (sigaction(sig, &sa, NULL))
		fr_die("sigaction");
}

static void own(int i, int type, pid_t id, int sig)
{
	int p[2];
	if (pipe(p))
		fr_die("pipe");
	rd[i] = p[0];
	wr[i] = p[1];
	struct f_owner_ex ex = {type, id};
	if (fcntl(rd[i], F_SETOWN_EX, &ex))
		fr_die("F_SETOWN_EX");
	if (fcntl(rd[i], F_SETSIG, sig))
		fr_die("F_SETSIG");
	if (fcntl(rd[i], F_SETFL, O_ASYNC | O_NONBLOCK))
		fr_die("F_SETFL");
	want_sig[i] = sig ? sig : SIGIO;
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	if (setpgid(0, 0))
		fr_die("setpgid");
	want_sig[0] = SIGRTMIN + 2;
	want_sig[1] = SIGRTMIN + 3;
	want_sig[2] = SIGIO;
	for (int i = 0; i < 3; i++)
		install(want_sig[i]);
	/* The worker's stack is static: a stack mapped next to other anonymous memory is a
	 * separate matter (VMA merging) this victim is not about. */
	static char stack[256 * 1024] __attribute__((aligned(4096)));
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setstack(&attr, stack, sizeof(stack));
	pthread_t th;
	if (pthread_create(&th, &attr, worker, NULL))
		fr_die("pthread_create");
	while (!worker_tid)
		usleep(1000);
	sigset_t tidsig;
	sigemptyset(&tidsig);
	sigaddset(&tidsig, SIGRTMIN + 3);
	pthread_sigmask(SIG_BLOCK, &tidsig, NULL);
	own(0, F_OWNER_PID, getpid(), SIGRTMIN + 2);
	own(1, F_OWNER_TID, worker_tid, SIGRTMIN + 3);
	own(2, F_OWNER_PGRP, getpgrp(), 0);
	if (argc > 2 && strcmp(argv[2], "outside") == 0) {
		int p[2];
		if (pipe(p))
			fr_die("pipe");
		if (fcntl(p[0], F_SETOWN, getppid()))
			fr_die("F_SETOWN");
		fr_status("fds outside=%d", p[0]);
	}
	fr_status("fds pid=%d tid=%d pgrp=%d", rd[0], rd[1], rd[2]);
	fr_ready();
	long checks = 0;
	for (unsigned long tick = 1;; tick++) {
		fr_log_tick(tick);
		usleep(20000);
		if (!fr_usr1_pending)
			continue;
		fr_usr1_pending = 0;
		char bad[160] = "";
		const pid_t owner[3] = {getpid(), worker_tid, getpgrp()};
		const int type[3] = {F_OWNER_PID, F_OWNER_TID, F_OWNER_PGRP};
		const int setsig[3] = {SIGRTMIN + 2, SIGRTMIN + 3, 0};
		for (int i = 0; i < 3 && !bad[0]; i++) {
			struct f_owner_ex ex = {-1, -1};
			int fl = fcntl(rd[i], F_GETFL);
			if (fcntl(rd[i], F_GETOWN_EX, &ex))
				snprintf(bad, sizeof(bad), "F_GETOWN_EX %d: %s", i, strerror(errno));
			else if (ex.type != type[i] || ex.pid != owner[i])
				snprintf(bad, sizeof(bad), "owner %d: type %d id %d, want %d %d", i,
					 ex.type, ex.pid, type[i], owner[i]);
			else if (fcntl(rd[i], F_GETSIG) != setsig[i])
				snprintf(bad, sizeof(bad), "F_GETSIG %d: %d, want %d", i,
					 fcntl(rd[i], F_GETSIG), setsig[i]);
			else if (fl < 0 || !(fl & O_ASYNC))
				snprintf(bad, sizeof(bad), "O_ASYNC %d lost (flags %#x)", i, fl);
		}
		for (int i = 0; i < 3 && !bad[0]; i++) {
			long g0 = got[i];
			char c = 'x';
			if (write(wr[i], &c, 1) != 1)
				fr_die("write");
			for (double until = fr_now() + 2; got[i] == g0 && fr_now() < until;)
				usleep(1000);
			while (read(rd[i], &c, 1) == 1)
				;
			if (got[i] == g0)
				snprintf(bad, sizeof(bad), "no signal %d for pipe %d", want_sig[i], i);
			else if (setsig[i] && got_fd[i] != rd[i])
				snprintf(bad, sizeof(bad), "si_fd %d for pipe %d (fd %d)", (int)got_fd[i], i,
					 rd[i]);
			else if (i == 1 && got_tid[i] != worker_tid)
				snprintf(bad, sizeof(bad), "TID signal went to %d, not %d", (int)got_tid[i],
					 (int)worker_tid);
		}
		if (bad[0]) {
			fr_status("BAD %s", bad);
		} else {
			checks++;
			fr_status("ok checks=%ld", checks);
		}
	}
}
