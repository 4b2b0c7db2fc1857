/* A descriptor in flight: a pipe's read end sent with SCM_RIGHTS over a Unix socketpair and not
 * yet received (the sender closed its copy). Receiving it after the restore gives a working fd
 * of that pipe (the bytes written into the pipe are read through it).
 * compat-object: SCM_RIGHTS descriptor in flight
 */
#include "common.h"

#include <sys/socket.h>

static int sv[2], pw;
static int checks;

static void send_fd(int fd)
{
	char c = 'F';
	struct iovec io = {.iov_base = &c, .iov_len = 1};
	char ctl[CMSG_SPACE(sizeof(int))];
	memset(ctl, 0, sizeof(ctl));
	struct msghdr m = {.msg_iov = &io, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof(ctl)};
	struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &fd, sizeof(int));
	if (sendmsg(sv[0], &m, 0) != 1)
		fr_die("sendmsg");
}

static void new_pipe_in_flight(void)
{
	int p[2];
	if (pipe(p))
		fr_die("pipe");
	send_fd(p[0]);
	close(p[0]);
	pw = p[1];
	if (write(pw, "through-the-flown-fd", 20) != 20)
		fr_die("write");
}

static void check(void)
{
	char c;
	struct iovec io = {.iov_base = &c, .iov_len = 1};
	char ctl[CMSG_SPACE(sizeof(int))];
	struct msghdr m = {.msg_iov = &io, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof(ctl)};
	ssize_t n = recvmsg(sv[1], &m, MSG_DONTWAIT);
	struct cmsghdr *cm = n == 1 ? CMSG_FIRSTHDR(&m) : NULL;
	if (!cm || cm->cmsg_type != SCM_RIGHTS) {
		fr_status("BAD no descriptor received (n=%zd, %s)", n, n < 0 ? strerror(errno) : "no cmsg");
		return;
	}
	int fd;
	memcpy(&fd, CMSG_DATA(cm), sizeof(int));
	char b[32];
	ssize_t r = read(fd, b, sizeof(b));
	close(fd);
	if (r != 20 || memcmp(b, "through-the-flown-fd", 20)) {
		fr_status("BAD the received fd is not the pipe (read %zd)", r);
		return;
	}
	close(pw);
	new_pipe_in_flight();
	checks++;
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv))
		fr_die("socketpair");
	new_pipe_in_flight();
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
