/* A thread in seccomp strict mode (only read/write/exit/sigreturn), blocked in read() on a pipe:
 * its status shows Seccomp: 1, and it still echoes a byte written to it (incremented).
 * compat-object: seccomp strict mode on one thread
 */
#include "common.h"

#include <linux/seccomp.h>
#include <pthread.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

static int in[2], out[2];
static volatile pid_t tid;

static void *strict(void *arg)
{
	(void)arg;
	tid = (pid_t)syscall(SYS_gettid);
	sigset_t all;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);
	if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT))
		return NULL;
	for (;;) {
		unsigned char c;
		if (read(in[0], &c, 1) == 1) {
			c++;
			write(out[1], &c, 1);
		}
	}
}

static const char *check(void)
{
	char path[64], buf[4096];
	snprintf(path, sizeof(path), "/proc/self/task/%d/status", tid);
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return "the strict thread is gone";
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	buf[n > 0 ? n : 0] = 0;
	if (!strstr(buf, "Seccomp:\t1"))
		return "the thread is not in strict mode";
	static unsigned char v;
	v++;
	unsigned char r = 0;
	write(in[1], &v, 1);
	if (read(out[0], &r, 1) != 1 || r != (unsigned char)(v + 1))
		return "the strict thread does not echo";
	return NULL;
}

static void setup(void)
{
	if (pipe(in) || pipe(out))
		fr_die("pipe");
	pthread_t t;
	pthread_create(&t, NULL, strict, NULL);
	while (!tid)
		usleep(1000);
	usleep(50000);
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
