/* A SysV semaphore set of 3 (own IPC namespace) with values 5, 0, 9, then a semop with SEM_UNDO
 * (+2 on sem 1) by the victim: the values (5 2 9), semctl GETPID, a forked child's SEM_UNDO op
 * undone at its exit, and the victim's own -2 with SEM_UNDO still allowed.
 * compat-object: SysV semaphore set with SEM_UNDO (own IPC namespace)
 */
#include "common.h"

#include <sched.h>
#include <sys/ipc.h>
#include <sys/sem.h>
#include <sys/wait.h>

static int id;

static const char *check(void)
{
	static char why[128];
	int v0 = semctl(id, 0, GETVAL), v1 = semctl(id, 1, GETVAL), v2 = semctl(id, 2, GETVAL);
	if (v0 < 0) {
		snprintf(why, sizeof(why), "semctl(%d, GETVAL): %s", id, strerror(errno));
		return why;
	}
	if (v0 != 5 || v1 != 2 || v2 != 9) {
		snprintf(why, sizeof(why), "values %d %d %d want 5 2 9", v0, v1, v2);
		return why;
	}
	if (semctl(id, 1, GETPID) != fr_pid0)
		return "GETPID of sem 1 is not the victim";
	/* A child's SEM_UNDO op is undone at its exit. */
	pid_t c = fork();
	if (c == 0) {
		struct sembuf op = {2, -4, SEM_UNDO};
		_exit(semop(id, &op, 1) ? 1 : 0);
	}
	int st;
	waitpid(c, &st, 0);
	if (!WIFEXITED(st) || WEXITSTATUS(st) || semctl(id, 2, GETVAL) != 9)
		return "a child's SEM_UNDO was not undone";
	/* Our own undo is still recorded: take it out and put it back. */
	struct sembuf op = {1, -2, SEM_UNDO | IPC_NOWAIT};
	if (semop(id, &op, 1))
		return "semop -2 on sem 1";
	op.sem_op = 2;
	semop(id, &op, 1);
	return NULL;
}

static void setup(void)
{
	if (unshare(CLONE_NEWIPC))
		fr_die("unshare(CLONE_NEWIPC)");
	id = semget(0x46727932, 3, IPC_CREAT | 0600);
	if (id < 0)
		fr_die("semget");
	unsigned short v[3] = {5, 0, 9};
	semctl(id, 0, SETALL, v);
	struct sembuf op = {1, 2, SEM_UNDO};
	if (semop(id, &op, 1))
		fr_die("semop");
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
