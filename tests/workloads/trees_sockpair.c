/* A parent (P) and its child (C) joined by a stream socketpair and a datagram socketpair
 * split by fork. Each queues bytes for the other before DIR/ready appears and reads nothing
 * until SIGUSR1. Usage: trees_sockpair DIR. On SIGUSR1 each reads what is queued for it and
 * reports "NAME got=STREAM|DGRAM1|DGRAM2"; then P sends "ping" and C, which waits for it,
 * reports "C ping". */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static const char *dir;
static volatile sig_atomic_t go;
static void on_usr1(int s) { (void)s; go = 1; }

static void report(const char *line)
{
	char path[512];
	snprintf(path, sizeof path, "%s/report", dir);
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT, 0644);
	if (fd < 0 || write(fd, line, strlen(line)) != (ssize_t)strlen(line))
		_exit(90);
	close(fd);
}

static void side(const char *me, const char *other, int st, int dg)
{
	char msg[64];
	snprintf(msg, sizeof msg, "from-%s", me);
	if (send(st, msg, strlen(msg), 0) < 0)
		_exit(3);
	snprintf(msg, sizeof msg, "dg1-%s", me);
	send(dg, msg, strlen(msg), 0);
	send(dg, "", 0, 0);
	snprintf(msg, sizeof msg, "dg2-%s", me);
	send(dg, msg, strlen(msg), 0);
	if (me[0] == 'C') {
		char path[512];
		snprintf(path, sizeof path, "%s/ready", dir);
		close(open(path, O_WRONLY | O_CREAT, 0644));
	}
	sigset_t none;
	sigemptyset(&none);
	while (!go)
		sigsuspend(&none);
	char s[64] = "", d1[64] = "", d0[8] = "", d2[64] = "";
	/* Exactly the queued message: P's "ping" may follow at once on the stream. */
	ssize_t n = recv(st, s, 6, MSG_DONTWAIT);
	ssize_t a = recv(dg, d1, sizeof d1 - 1, MSG_DONTWAIT);
	ssize_t z = recv(dg, d0, sizeof d0 - 1, MSG_DONTWAIT);
	ssize_t b = recv(dg, d2, sizeof d2 - 1, MSG_DONTWAIT);
	char line[256];
	snprintf(line, sizeof line, "%s got=%s|%s|%zd|%s n=%zd,%zd,%zd\n", me, n > 0 ? s : "-",
		 a > 0 ? d1 : "-", z, b > 0 ? d2 : "-", n, a, b);
	report(line);
	(void)other;
	if (me[0] == 'P') {
		send(st, "ping", 4, 0);
	} else {
		char p[8] = "";
		if (recv(st, p, 4, 0) == 4 && !strcmp(p, "ping"))
			report("C ping\n");
	}
	for (;;)
		pause();
}

int main(int argc, char **argv)
{
	if (argc < 2)
		return 2;
	dir = argv[1];
	sigset_t usr1;
	sigemptyset(&usr1);
	sigaddset(&usr1, SIGUSR1);
	sigprocmask(SIG_BLOCK, &usr1, NULL);
	signal(SIGUSR1, on_usr1);
	int st[2], dg[2];
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, st) < 0 || socketpair(AF_UNIX, SOCK_DGRAM, 0, dg) < 0)
		return 3;
	pid_t c = fork();
	if (c < 0)
		return 4;
	if (c == 0) {
		close(st[0]);
		close(dg[0]);
		side("C", "P", st[1], dg[1]);
	}
	close(st[1]);
	close(dg[1]);
	side("P", "C", st[0], dg[0]);
	return 0;
}
