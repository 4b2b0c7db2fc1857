/* F_SETOWN_EX with F_OWNER_TID: I/O signals of a socketpair end go to one particular thread,
 * which records that it received them.
 * compat-object: F_SETOWN_EX F_OWNER_TID (I/O signals to one thread)
 */
#include "common.h"

#include <pthread.h>
#include <sys/socket.h>
#include <sys/syscall.h>

static int sv[2];
static volatile pid_t worker_tid;
static volatile sig_atomic_t got_tid;

static void on_io(int sig)
{
	(void)sig;
	got_tid = (pid_t)syscall(SYS_gettid);
}

static void *worker(void *arg)
{
	(void)arg;
	worker_tid = (pid_t)syscall(SYS_gettid);
	for (;;)
		pause();
	return NULL;
}

static void check(void)
{
	struct f_owner_ex o;
	if (fcntl(sv[0], F_GETOWN_EX, &o) || o.type != F_OWNER_TID || o.pid != worker_tid) {
		fr_status("BAD owner type %d pid %d want tid %d", o.type, o.pid, (int)worker_tid);
		return;
	}
	got_tid = 0;
	if (write(sv[1], "x", 1) != 1) {
		fr_status("BAD write");
		return;
	}
	for (int i = 0; i < 100 && !got_tid; i++)
		usleep(10000);
	char c;
	if (read(sv[0], &c, 1) != 1) {
		fr_status("BAD read");
		return;
	}
	if (got_tid != worker_tid) {
		fr_status("BAD signal went to tid %d want %d", (int)got_tid, (int)worker_tid);
		return;
	}
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	fr_install(SIGRTMIN + 4, on_io, SA_RESTART);
	pthread_t t;
	pthread_create(&t, NULL, worker, NULL);
	while (!worker_tid)
		usleep(1000);
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv))
		fr_die("socketpair");
	struct f_owner_ex o = {.type = F_OWNER_TID, .pid = worker_tid};
	if (fcntl(sv[0], F_SETOWN_EX, &o) || fcntl(sv[0], F_SETSIG, SIGRTMIN + 4) ||
	    fcntl(sv[0], F_SETFL, O_ASYNC | O_NONBLOCK))
		fr_die("setup");
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
