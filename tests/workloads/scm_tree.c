/* Descriptors and credentials in flight between two processes of a tree: a child sends its
 * parent, over a socketpair split by fork, the read end of a pipe the child still holds (with
 * "pipe N" queued in it), and its credentials (the parent's end has SO_PASSCRED). Between
 * checks the message waits in the parent's queue. A check (parent) receives it and verifies
 * the bytes, the credentials (the child's pid, uid, gid) and the pipe (its bytes), then asks
 * the child (a byte on the pair) to queue the next round and waits for it.
 * Usage: scm_tree STATEDIR. Dump with --tree. */
#include "common.h"

#include <poll.h>
#include <sys/socket.h>

static int sp[2];
static pid_t child;
static int round_no;

static void child_main(void)
{
	signal(SIGUSR1, SIG_IGN);
	close(sp[0]);
	int pp[2];
	if (pipe(pp))
		_exit(10);
	for (int n = 0;; n++) {
		char msg[64];
		int len = snprintf(msg, sizeof msg, "pipe %d", n);
		if (write(pp[1], msg, len) != len)
			_exit(11);
		len = snprintf(msg, sizeof msg, "msg %d", n);
		union {
			char buf[CMSG_SPACE(sizeof(int))];
			struct cmsghdr align;
		} u;
		struct iovec iov = {msg, (size_t)len};
		struct msghdr mh = {0};
		mh.msg_iov = &iov;
		mh.msg_iovlen = 1;
		mh.msg_control = u.buf;
		mh.msg_controllen = sizeof u.buf;
		struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &pp[0], sizeof(int));
		if (sendmsg(sp[1], &mh, 0) != len)
			_exit(12);
		/* Wait for the parent to ask for the next one. */
		char b;
		if (read(sp[1], &b, 1) != 1)
			_exit(13);
	}
}

static void check(void)
{
	char buf[64], want[64];
	union {
		char b[CMSG_SPACE(sizeof(int)) + CMSG_SPACE(sizeof(struct ucred))];
		struct cmsghdr align;
	} u;
	struct iovec iov = {buf, sizeof buf - 1};
	struct msghdr mh = {0};
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	mh.msg_control = u.b;
	mh.msg_controllen = sizeof u.b;
	ssize_t n = recvmsg(sp[0], &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
	if (n < 0)
		return fr_status("BAD nothing queued: %s", strerror(errno));
	buf[n] = 0;
	snprintf(want, sizeof want, "msg %d", round_no);
	if (strcmp(buf, want))
		return fr_status("BAD got %s, want %s", buf, want);
	int fd = -1, has = 0;
	struct ucred cr = {0};
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
		if (c->cmsg_type == SCM_RIGHTS)
			memcpy(&fd, CMSG_DATA(c), sizeof fd);
		if (c->cmsg_type == SCM_CREDENTIALS) {
			memcpy(&cr, CMSG_DATA(c), sizeof cr);
			has = 1;
		}
	}
	if (!has || cr.pid != child || cr.uid != getuid() || cr.gid != getgid())
		return fr_status("BAD credentials has=%d pid=%d (child %d)", has, (int)cr.pid, (int)child);
	if (fd < 0)
		return fr_status("BAD no descriptor");
	snprintf(want, sizeof want, "pipe %d", round_no);
	char got[64];
	n = read(fd, got, strlen(want));
	got[n < 0 ? 0 : n] = 0;
	close(fd);
	if (strcmp(got, want))
		return fr_status("BAD pipe reads %s, want %s", got, want);
	round_no++;
	if (write(sp[0], "n", 1) != 1)
		return fr_status("BAD cannot ask the child");
	struct pollfd p = {sp[0], POLLIN, 0};
	if (poll(&p, 1, 5000) != 1)
		return fr_status("BAD the child did not queue the next round");
	fr_status("ok checks=%d child=%d", round_no, (int)child);
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	if (socketpair(AF_UNIX, SOCK_DGRAM, 0, sp))
		fr_die("socketpair");
	int one = 1;
	if (setsockopt(sp[0], SOL_SOCKET, SO_PASSCRED, &one, sizeof one))
		fr_die("SO_PASSCRED");
	child = fork();
	if (child < 0)
		fr_die("fork");
	if (child == 0)
		child_main();
	close(sp[1]);
	struct pollfd p = {sp[0], POLLIN, 0};
	if (poll(&p, 1, 5000) != 1)
		fr_die("the child's first message");
	fr_ready();
	for (unsigned long tick = 0;; tick++) {
		if (fr_usr1_pending) {
			fr_usr1_pending = 0;
			check();
		}
		fr_log_tick(tick);
		usleep(10000);
	}
}
