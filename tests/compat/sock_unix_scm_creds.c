/* SO_PASSCRED on the receiving end of a Unix datagram socketpair, and a datagram queued with
 * explicit SCM_CREDENTIALS (pid, uid 0, gid 0) unread: the option, and the credentials received
 * with the datagram name this process.
 * compat-object: SCM_CREDENTIALS in flight and SO_PASSCRED
 */
#include "common.h"

#include <sys/socket.h>

static int sv[2];

static void send_creds(void)
{
	struct ucred uc = {.pid = getpid(), .uid = getuid(), .gid = getgid()};
	char c = 'C';
	struct iovec io = {.iov_base = &c, .iov_len = 1};
	char ctl[CMSG_SPACE(sizeof(uc))];
	memset(ctl, 0, sizeof(ctl));
	struct msghdr m = {.msg_iov = &io, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof(ctl)};
	struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_CREDENTIALS;
	cm->cmsg_len = CMSG_LEN(sizeof(uc));
	memcpy(CMSG_DATA(cm), &uc, sizeof(uc));
	if (sendmsg(sv[0], &m, 0) != 1)
		fr_die("sendmsg");
}

static void check(void)
{
	int v = 0;
	socklen_t l = sizeof(v);
	getsockopt(sv[1], SOL_SOCKET, SO_PASSCRED, &v, &l);
	if (!v) {
		fr_status("BAD SO_PASSCRED lost");
		return;
	}
	char c;
	struct iovec io = {.iov_base = &c, .iov_len = 1};
	char ctl[CMSG_SPACE(sizeof(struct ucred))];
	struct msghdr m = {.msg_iov = &io, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof(ctl)};
	ssize_t n = recvmsg(sv[1], &m, MSG_DONTWAIT);
	struct cmsghdr *cm = n == 1 ? CMSG_FIRSTHDR(&m) : NULL;
	if (!cm || cm->cmsg_type != SCM_CREDENTIALS) {
		fr_status("BAD no credentials with the datagram (n=%zd)", n);
		return;
	}
	struct ucred uc;
	memcpy(&uc, CMSG_DATA(cm), sizeof(uc));
	if (uc.pid != getpid() || uc.uid != getuid() || uc.gid != getgid()) {
		fr_status("BAD credentials pid %d uid %d gid %d, want %d %d %d", uc.pid, uc.uid, uc.gid, (int)getpid(),
			  (int)getuid(), (int)getgid());
		return;
	}
	send_creds();
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	int one = 1;
	if (socketpair(AF_UNIX, SOCK_DGRAM, 0, sv) || setsockopt(sv[1], SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)))
		fr_die("setup");
	send_creds();
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
