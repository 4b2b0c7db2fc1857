/* The limits of the victim's own IPC namespace (kernel.msgmnb, kernel.sem, kernel.shmmni set
 * in it) and a message queue whose size limit (msg_qbytes) was set below msgmnb and whose
 * last receiver is the victim: the sysctls read back, IPC_STAT shows the limit and the last
 * receiver, and the queue takes one message of 6000 bytes but not two.
 * compat-object: IPC namespace limits (sysctls) and a queue's msg_qbytes
 */
#include "common.h"

#include <sched.h>
#include <sys/ipc.h>
#include <sys/msg.h>

static int id;

static int read_sysctl(const char *path, char *out, size_t n)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	int ok = fgets(out, (int)n, f) != NULL;
	fclose(f);
	return ok ? 0 : -1;
}

static int write_sysctl(const char *path, const char *v)
{
	FILE *f = fopen(path, "w");
	if (!f)
		return -1;
	int ok = fputs(v, f) >= 0;
	return fclose(f) == 0 && ok ? 0 : -1;
}

static const char *check(void)
{
	static char why[160];
	char b[128];
	if (read_sysctl("/proc/sys/kernel/msgmnb", b, sizeof(b)) || atoi(b) != 12000)
		return "kernel.msgmnb is not 12000";
	if (read_sysctl("/proc/sys/kernel/shmmni", b, sizeof(b)) || atoi(b) != 77)
		return "kernel.shmmni is not 77";
	int s[4];
	if (read_sysctl("/proc/sys/kernel/sem", b, sizeof(b)) ||
	    sscanf(b, "%d %d %d %d", &s[0], &s[1], &s[2], &s[3]) != 4 || s[0] != 250 ||
	    s[2] != 100 || s[3] != 128)
		return "kernel.sem is not 250 * 100 128";
	struct msqid_ds ds;
	if (msgctl(id, IPC_STAT, &ds)) {
		snprintf(why, sizeof(why), "msgctl(%d, IPC_STAT): %s", id, strerror(errno));
		return why;
	}
	if (ds.msg_qbytes != 9000 || ds.msg_qnum != 0 || ds.msg_lrpid != fr_pid0) {
		snprintf(why, sizeof(why), "qbytes %lu qnum %lu lrpid %d", (unsigned long)ds.msg_qbytes,
			 (unsigned long)ds.msg_qnum, (int)ds.msg_lrpid);
		return why;
	}
	/* 6000 bytes fit, 12000 do not (the queue's limit, not msgmnb's). */
	static struct {
		long type;
		char text[6000];
	} m;
	m.type = 2;
	if (msgsnd(id, &m, sizeof(m.text), IPC_NOWAIT))
		return "the queue does not take 6000 bytes";
	int over = msgsnd(id, &m, sizeof(m.text), IPC_NOWAIT) == 0;
	while (msgrcv(id, &m, sizeof(m.text), 0, IPC_NOWAIT) == sizeof(m.text))
		;
	if (over)
		return "the queue took 12000 bytes (above its msg_qbytes)";
	/* The victim received last again. */
	return NULL;
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	if (unshare(CLONE_NEWIPC))
		fr_die("unshare(CLONE_NEWIPC)");
	if (write_sysctl("/proc/sys/kernel/msgmnb", "12000") ||
	    write_sysctl("/proc/sys/kernel/shmmni", "77") ||
	    write_sysctl("/proc/sys/kernel/sem", "250 32000 100 128"))
		fr_die("write sysctls");
	id = msgget(IPC_PRIVATE, IPC_CREAT | 0620);
	struct msqid_ds ds;
	if (id < 0 || msgctl(id, IPC_STAT, &ds))
		fr_die("msgget");
	ds.msg_qbytes = 9000;
	if (msgctl(id, IPC_SET, &ds))
		fr_die("IPC_SET");
	struct {
		long type;
		char text[4];
	} m = {1, "abc"};
	if (msgsnd(id, &m, 4, 0) || msgrcv(id, &m, 4, 0, 0) != 4)
		fr_die("msgsnd/msgrcv");
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
