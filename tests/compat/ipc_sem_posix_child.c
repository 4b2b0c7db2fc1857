/* A POSIX unnamed semaphore (sem_init pshared=1) in shared memory: the child sits in sem_wait;
 * sem_post from the parent lets it through and it acknowledges with a second semaphore.
 * compat-object: process-shared POSIX semaphore with a waiting child
 * compat-dump-args: --tree
 */
#include "common.h"

#include <semaphore.h>
#include <sys/mman.h>

struct shm {
	sem_t go, done;
	volatile int n;
};
static struct shm *s;

static const char *check(void)
{
	int before = s->n;
	sem_post(&s->go);
	struct timespec t;
	clock_gettime(CLOCK_REALTIME, &t);
	t.tv_sec += 3;
	if (sem_timedwait(&s->done, &t))
		return "the child did not pass sem_wait";
	if (s->n != before + 1)
		return "the child's counter differs";
	return NULL;
}

static void setup(void)
{
	s = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	sem_init(&s->go, 1, 0);
	sem_init(&s->done, 1, 0);
	if (fork() == 0) {
		close(fr_status_fd);
		close(fr_log_fd);
		for (;;) {
			while (sem_wait(&s->go))
				;
			s->n++;
			sem_post(&s->done);
		}
	}
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
