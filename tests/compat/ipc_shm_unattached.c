/* A SysV shm segment in the victim's own IPC namespace that no process attaches (filled, then
 * detached): it is still there with its key, mode, size and bytes (attached again now).
 * compat-object: SysV shm segment attached by nobody (own IPC namespace)
 */
#include "common.h"

#include <sched.h>
#include <sys/ipc.h>
#include <sys/shm.h>

#define KEY 0x46727934
static int id;

static const char *check(void)
{
	static char why[128];
	int again = shmget(KEY, 0, 0);
	if (again != id) {
		snprintf(why, sizeof(why), "shmget(key) gives %d, was %d (%s)", again, id, strerror(errno));
		return why;
	}
	struct shmid_ds ds;
	if (shmctl(id, IPC_STAT, &ds) || ds.shm_nattch != 0 || ds.shm_segsz != 3 * 4096 + 5 ||
	    (ds.shm_perm.mode & 0777) != 0604)
		return "IPC_STAT differs";
	unsigned char *b = shmat(id, NULL, SHM_RDONLY);
	if (b == (void *)-1)
		return "shmat";
	const char *bad = NULL;
	for (int i = 0; i < 3 * 4096 + 5; i++)
		if (b[i] != (i >= 4096 && i < 8192 ? 0 : (unsigned char)(i * 7 + 1))) {
			bad = "bytes differ";
			break;
		}
	shmdt(b);
	return bad;
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	if (unshare(CLONE_NEWIPC))
		fr_die("unshare(CLONE_NEWIPC)");
	id = shmget(KEY, 3 * 4096 + 5, IPC_CREAT | IPC_EXCL | 0604);
	unsigned char *a = shmat(id, NULL, 0);
	if (id < 0 || a == (void *)-1)
		fr_die("shm");
	/* A page of zeros in the middle. */
	for (int i = 0; i < 3 * 4096 + 5; i++)
		a[i] = i >= 4096 && i < 8192 ? 0 : (unsigned char)(i * 7 + 1);
	shmdt(a);
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
