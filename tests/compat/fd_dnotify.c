/* Directory notification (F_NOTIFY, DN_CREATE|DN_MULTISHOT, F_SETSIG SIGRTMIN+5): creating a
 * file in the directory delivers the signal with si_fd = the directory's descriptor.
 * compat-object: dnotify (fcntl F_NOTIFY) on a directory
 * compat-refuse: dnotify
 */
#include "common.h"

static int dfd;
static volatile sig_atomic_t got_fd = -1;
static int n;

static void on_dn(int sig, siginfo_t *si, void *u)
{
	(void)sig;
	(void)u;
	got_fd = si->si_fd;
}

static void check(void)
{
	got_fd = -1;
	char name[64];
	snprintf(name, sizeof(name), "watched/f%d", ++n);
	close(fr_open_in_dir(name, O_WRONLY | O_CREAT, 0644));
	for (int i = 0; i < 100 && got_fd < 0; i++)
		usleep(10000);
	if (got_fd != dfd) {
		fr_status("BAD no dnotify signal for a new file (si_fd %d)", (int)got_fd);
		return;
	}
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	struct sigaction sa = {.sa_sigaction = on_dn, .sa_flags = SA_SIGINFO | SA_RESTART};
	sigaction(SIGRTMIN + 5, &sa, NULL);
	char p[4096];
	snprintf(p, sizeof(p), "%s/watched", fr_dir);
	mkdir(p, 0755);
	dfd = open(p, O_RDONLY | O_DIRECTORY);
	if (dfd < 0 || fcntl(dfd, F_SETSIG, SIGRTMIN + 5) || fcntl(dfd, F_NOTIFY, DN_CREATE | DN_MULTISHOT))
		fr_die("F_NOTIFY");
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
