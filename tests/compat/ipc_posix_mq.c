/* A POSIX message queue (mq_open, name unlinked at once so nothing is left behind; maxmsg 8,
 * msgsize 64, O_NONBLOCK) holding 3 messages with priorities 1, 9, 4: mq_getattr, and the
 * messages come out by priority (then are sent back).
 * compat-object: POSIX message queue with queued messages (unlinked)
 * compat-libs: -lrt
 * compat-refuse: a POSIX message queue
 */
#include "common.h"

#include <mqueue.h>

static mqd_t q;

static const char *check(void)
{
	static char why[128];
	struct mq_attr a;
	if (mq_getattr(q, &a)) {
		snprintf(why, sizeof(why), "mq_getattr: %s", strerror(errno));
		return why;
	}
	if (a.mq_maxmsg != 8 || a.mq_msgsize != 64 || a.mq_curmsgs != 3 || !(a.mq_flags & O_NONBLOCK)) {
		snprintf(why, sizeof(why), "attr maxmsg %ld msgsize %ld cur %ld flags %lx", a.mq_maxmsg,
			 a.mq_msgsize, a.mq_curmsgs, a.mq_flags);
		return why;
	}
	char buf[3][64];
	unsigned pr[3];
	ssize_t n[3];
	for (int i = 0; i < 3; i++)
		n[i] = mq_receive(q, buf[i], 64, &pr[i]);
	for (int i = 0; i < 3; i++)
		if (n[i] >= 0)
			mq_send(q, buf[i], (size_t)n[i], pr[i]);
	static const unsigned want[3] = {9, 4, 1};
	for (int i = 0; i < 3; i++)
		if (n[i] != 10 + (ssize_t)want[i] || pr[i] != want[i] || buf[i][0] != (char)('0' + want[i])) {
			snprintf(why, sizeof(why), "message %d: n %zd prio %u", i, n[i], pr[i]);
			return why;
		}
	return NULL;
}

static void setup(void)
{
	char name[64];
	snprintf(name, sizeof(name), "/ferry-compat-%d", getpid());
	struct mq_attr a = {.mq_maxmsg = 8, .mq_msgsize = 64};
	q = mq_open(name, O_RDWR | O_CREAT | O_EXCL | O_NONBLOCK, 0600, &a);
	if (q == (mqd_t)-1)
		fr_die("mq_open");
	mq_unlink(name);
	unsigned prios[3] = {1, 9, 4};
	for (int i = 0; i < 3; i++) {
		char m[64];
		memset(m, '0' + (int)prios[i], sizeof(m));
		mq_send(q, m, 10 + prios[i], prios[i]);
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
