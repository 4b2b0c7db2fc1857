/* A worker thread blocked in read() on an empty pipe, SIGUSR2 handled WITHOUT SA_RESTART: a
 * SIGUSR2 sent to the worker makes its read fail with EINTR (reported), then it reads again;
 * a byte written to the pipe is then read normally.
 * compat-object: handler without SA_RESTART interrupting a blocked read
 */
#include "common.h"

#include <pthread.h>
#include <sys/syscall.h>

static int p[2], rep[2];
static volatile pid_t tid;
static volatile int in_read;

static void h(int s)
{
	(void)s;
}

static void *worker(void *a)
{
	(void)a;
	tid = (pid_t)syscall(SYS_gettid);
	for (;;) {
		char c;
		in_read = 1;
		ssize_t n = read(p[0], &c, 1);
		int r = n == 1 ? c : (n < 0 && errno == EINTR ? 'I' : '?');
		in_read = 0;
		write(rep[1], &r, sizeof(r));
	}
	return NULL;
}

static const char *check(void)
{
	for (int i = 0; i < 200 && !in_read; i++)
		usleep(1000);
	usleep(20000);
	syscall(SYS_tgkill, getpid(), tid, SIGUSR2);
	int r = 0;
	if (read(rep[0], &r, sizeof(r)) != sizeof(r) || r != 'I')
		return "the signal did not interrupt the read with EINTR";
	write(p[1], "k", 1);
	if (read(rep[0], &r, sizeof(r)) != sizeof(r) || r != 'k')
		return "the byte was not read";
	return NULL;
}

static void setup(void)
{
	pipe(p);
	pipe(rep);
	fr_install(SIGUSR2, h, 0);
	pthread_t t;
	pthread_create(&t, NULL, worker, NULL);
	while (!tid)
		usleep(1000);
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
