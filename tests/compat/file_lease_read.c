/* A read lease (F_SETLEASE F_RDLCK) with its break signal (F_SETSIG SIGRTMIN+2): F_GETLEASE
 * reports it; a write open by a child breaks it and the signal arrives with si_fd.
 * The break is tested on a second file with the same setup, so the first stays leased.
 * Giving a lease up (F_UNLCK) also clears the file's owner and F_SETSIG signal (the kernel's
 * lease_modify), so the check sets the signal again before taking the lease again.
 * compat-object: file read lease with a lease-break signal
 */
#include "common.h"

#include <sys/wait.h>

static int fd, fd2;
static volatile sig_atomic_t got_fd = -1;

static void on_lease(int sig, siginfo_t *si, void *u)
{
	(void)sig;
	(void)u;
	got_fd = si->si_fd;
}

static void check(void)
{
	int l = fcntl(fd, F_GETLEASE), l2 = fcntl(fd2, F_GETLEASE);
	if (l != F_RDLCK || l2 != F_RDLCK) {
		fr_status("BAD F_GETLEASE %d/%d want F_RDLCK (%d)", l, l2, F_RDLCK);
		return;
	}
	/* Taking a lease makes the taker the file's owner (the break signal's target). */
	if (fcntl(fd, F_GETOWN) != getpid() || fcntl(fd2, F_GETOWN) != getpid()) {
		fr_status("BAD F_GETOWN %d/%d want %d", fcntl(fd, F_GETOWN), fcntl(fd2, F_GETOWN), (int)getpid());
		return;
	}
	if (fcntl(fd2, F_GETSIG) != SIGRTMIN + 2) {
		fr_status("BAD F_GETSIG %d", fcntl(fd2, F_GETSIG));
		return;
	}
	got_fd = -1;
	pid_t c = fork();
	if (c == 0) {
		char path[4096];
		snprintf(path, sizeof(path), "%s/leased2", fr_dir);
		int w = open(path, O_WRONLY | O_NONBLOCK);
		_exit(w < 0 && errno == EWOULDBLOCK ? 0 : 1);
	}
	int st;
	waitpid(c, &st, 0);
	for (int i = 0; i < 100 && got_fd < 0; i++)
		usleep(10000);
	if (!WIFEXITED(st) || WEXITSTATUS(st)) {
		fr_status("BAD a writer's open was not blocked by the lease");
		return;
	}
	if (got_fd != fd2) {
		fr_status("BAD lease break signal: si_fd %d want %d", (int)got_fd, fd2);
		return;
	}
	/* Give the lease up and take it again, with its signal, for the next check. */
	fcntl(fd2, F_SETLEASE, F_UNLCK);
	if (fcntl(fd2, F_SETSIG, SIGRTMIN + 2) || fcntl(fd2, F_SETLEASE, F_RDLCK))
		fr_status("BAD re-lease: %s", strerror(errno));
	else
		fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	struct sigaction sa = {.sa_sigaction = on_lease, .sa_flags = SA_SIGINFO | SA_RESTART};
	sigaction(SIGRTMIN + 2, &sa, NULL);
	close(fr_open_in_dir("leased", O_WRONLY | O_CREAT, 0644));
	close(fr_open_in_dir("leased2", O_WRONLY | O_CREAT, 0644));
	fd = fr_open_in_dir("leased", O_RDONLY, 0);
	fd2 = fr_open_in_dir("leased2", O_RDONLY, 0);
	if (fcntl(fd2, F_SETSIG, SIGRTMIN + 2) || fcntl(fd, F_SETLEASE, F_RDLCK) || fcntl(fd2, F_SETLEASE, F_RDLCK))
		fr_die("F_SETLEASE");
	fr_ready();
	for (unsigned long tick = 1;; tick++) {
		if (fr_usr1_pending) {
			fr_usr1_pending = 0;
			check();
		}
		fr_log_tick(tick);
		usleep(10000);
	}
}
