/* A SysV message queue (own IPC namespace) holding 4 messages of types 1, 7, 3, 7: the count and
 * bytes (IPC_STAT), and each message in order (read with MSG_COPY, which leaves them queued).
 * compat-object: SysV message queue with queued messages (own IPC namespace)
 */
#include "common.h"

#include <sched.h>
#include <sys/ipc.h>
#include <sys/msg.h>

#ifndef MSG_COPY
#define MSG_COPY 040000
#endif
static int id;
static const long types[4] = {1, 7, 3, 7};

static const char *check(void)
{
	static char why[128];
	struct msqid_ds ds;
	if (msgctl(id, IPC_STAT, &ds)) {
		snprintf(why, sizeof(why), "msgctl(%d, IPC_STAT): %s", id, strerror(errno));
		return why;
	}
	if (ds.msg_qnum != 4 || ds.__msg_cbytes != 4 * 100) {
		snprintf(why, sizeof(why), "qnum %lu bytes %lu", (unsigned long)ds.msg_qnum, (unsigned long)ds.__msg_cbytes);
		return why;
	}
	for (int i = 0; i < 4; i++) {
		struct {
			long type;
			char text[100];
		} m;
		ssize_t n = msgrcv(id, &m, 100, i, MSG_COPY | IPC_NOWAIT);
		if (n != 100 || m.type != types[i] || m.text[0] != 'a' + i || m.text[99] != 'z') {
			snprintf(why, sizeof(why), "message %d: n %zd type %ld", i, n, m.type);
			return why;
		}
	}
	return NULL;
}

static void setup(void)
{
	if (unshare(CLONE_NEWIPC))
		fr_die("unshare(CLONE_NEWIPC)");
	id = msgget(0x46727933, IPC_CREAT | 0600);
	for (int i = 0; i < 4; i++) {
		struct {
			long type;
			char text[100];
		} m;
		m.type = types[i];
		memset(m.text, 'a' + i, 99);
		m.text[99] = 'z';
		if (msgsnd(id, &m, 100, 0))
			fr_die("msgsnd");
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
