/* A SysV shm segment with a key (in the victim's own IPC namespace, so nothing outlives it),
 * attached once: shmget with the key finds the same id, IPC_STAT shows size/mode/nattch, and a
 * second attach made now sees the bytes of the first.
 * compat-object: SysV shm segment with a key (own IPC namespace)
 */
#include "common.h"

#include <sched.h>
#include <sys/ipc.h>
#include <sys/shm.h>

#define KEY 0x46727931
static int id;
static unsigned char *a;

static const char *check(void)
{
	static char why[128];
	int again = shmget(KEY, 0, 0);
	if (again != id) {
		snprintf(why, sizeof(why), "shmget(key) gives %d, was %d (%s)", again, id, strerror(errno));
		return why;
	}
	struct shmid_ds ds;
	if (shmctl(id, IPC_STAT, &ds) || ds.shm_nattch != 1 || ds.shm_segsz != 12345 ||
	    (ds.shm_perm.mode & 0777) != 0640)
		return "IPC_STAT differs";
	unsigned char *b = shmat(id, NULL, SHM_RDONLY);
	if (b == (void *)-1)
		return "shmat";
	int same = !memcmp(a, b, 12345);
	shmdt(b);
	if (!same)
		return "a new attach does not see the bytes (another segment)";
	for (int i = 0; i < 12345; i++)
		if (a[i] != (unsigned char)(i * 3))
			return "bytes differ";
	return NULL;
}

static void setup(void)
{
	if (unshare(CLONE_NEWIPC))
		fr_die("unshare(CLONE_NEWIPC)");
	id = shmget(KEY, 12345, IPC_CREAT | IPC_EXCL | 0640);
	a = shmat(id, NULL, 0);
	if (id < 0 || a == (void *)-1)
		fr_die("shm");
	for (int i = 0; i < 12345; i++)
		a[i] = (unsigned char)(i * 3);
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
