/* A session with a controlling terminal: the root (S) calls setsid(), opens the pty slave
 * given (it becomes S's controlling terminal) as fds 0-2, forks G into a process group of
 * its own and puts that group in the terminal's foreground. Usage: trees_tty DIR SLAVE.
 * DIR/ready appears once set up. On SIGUSR1, G writes "G PID says hello" to the terminal. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t go;
static void on_usr1(int s) { (void)s; go = 1; }

int main(int argc, char **argv)
{
	if (argc < 3)
		return 2;
	if (setsid() < 0)
		return 3;
	int fd = open(argv[2], O_RDWR);
	if (fd < 0)
		return 4;
	for (int i = 0; i < 3; i++)
		dup2(fd, i);
	if (fd > 2)
		close(fd);
	sigset_t usr1, none;
	sigemptyset(&usr1);
	sigemptyset(&none);
	sigaddset(&usr1, SIGUSR1);
	sigprocmask(SIG_BLOCK, &usr1, NULL);
	signal(SIGUSR1, on_usr1);
	pid_t g = fork();
	if (g < 0)
		return 5;
	if (g == 0) {
		setpgid(0, 0);
		for (;;) {
			sigsuspend(&none);
			if (go) {
				go = 0;
				char line[64];
				int n = snprintf(line, sizeof line, "G %d says hello\n", (int)getpid());
				if (write(1, line, n) != n)
					return 6;
			}
		}
	}
	setpgid(g, g);
	if (tcsetpgrp(0, g) < 0)
		return 7;
	char path[512];
	snprintf(path, sizeof path, "%s/ready", argv[1]);
	close(open(path, O_WRONLY | O_CREAT, 0644));
	for (;;)
		pause();
}
