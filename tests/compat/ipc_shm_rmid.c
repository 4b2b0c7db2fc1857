/* A SysV shared memory segment (IPC_PRIVATE, 64 KiB) attached twice (one attach read-only) and
 * then marked removed (IPC_RMID), so nothing is left behind: both attaches show the same object
 * (a write through one is seen through the other), shmctl IPC_STAT on its id still answers with
 * nattch 2 and the "dest" mode bit, and the bytes are intact.
 * compat-object: SysV shm segment attached and removed (IPC_RMID)
 */
#include "common.h"

#include <sys/ipc.h>
#include <sys/shm.h>

static int id;
static unsigned char *a, *b;

static const char *check(void)
{
	static char why[128];
	struct shmid_ds ds;
	if (shmctl(id, IPC_STAT, &ds)) {
		snprintf(why, sizeof(why), "shmctl(%d, IPC_STAT): %s", id, strerror(errno));
		return why;
	}
	if (ds.shm_nattch != 2 || ds.shm_segsz != 65536 || !(ds.shm_perm.mode & SHM_DEST) ||
	    (ds.shm_perm.mode & 0777) != 0600) {
		snprintf(why, sizeof(why), "nattch %lu size %zu mode %o", (unsigned long)ds.shm_nattch,
			 ds.shm_segsz, ds.shm_perm.mode);
		return why;
	}
	for (int i = 0; i < 65536; i += 111)
		if (i != 5 && b[i] != (unsigned char)(i / 111))
			return "bytes differ";
	a[5]++;
	if (b[5] != a[5])
		return "the two attaches are not the same segment";
	return NULL;
}

static void setup(void)
{
	id = shmget(IPC_PRIVATE, 65536, IPC_CREAT | 0600);
	if (id < 0)
		fr_die("shmget");
	a = shmat(id, NULL, 0);
	b = shmat(id, NULL, SHM_RDONLY);
	shmctl(id, IPC_RMID, NULL);
	if (a == (void *)-1 || b == (void *)-1)
		fr_die("shmat");
	for (int i = 0; i < 65536; i += 111)
		a[i] = (unsigned char)(i / 111);
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
