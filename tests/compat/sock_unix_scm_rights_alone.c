/* Descriptors in flight whose files no process holds any more (SCM_RIGHTS over a Unix stream
 * socketpair, the sender's copies closed), in three messages: the read end of a pipe holding
 * bytes whose write end is closed (reads its bytes, then end of file); both ends of another
 * pipe in one message (the write end non-blocking, holding bytes: what is written through the
 * received write end comes out of the received read end after them); a regular file opened
 * O_APPEND at offset 7. After the restore each is received in order with its state.
 * compat-object: SCM_RIGHTS pipes and a file in flight that no process holds
 */
#include "common.h"

#include <fcntl.h>
#include <sys/socket.h>

static int sv[2];

static void send_fds(char tag, const int *fds, int n)
{
	struct iovec io = {.iov_base = &tag, .iov_len = 1};
	char ctl[CMSG_SPACE(2 * sizeof(int))];
	memset(ctl, 0, sizeof(ctl));
	struct msghdr m = {.msg_iov = &io, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = CMSG_SPACE(n * sizeof(int))};
	struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(n * sizeof(int));
	memcpy(CMSG_DATA(cm), fds, n * sizeof(int));
	if (sendmsg(sv[0], &m, 0) != 1)
		fr_die("sendmsg");
}

/* Receives one message: its tag and up to two descriptors; returns how many. */
static int recv_fds(char *tag, int *fds)
{
	struct iovec io = {.iov_base = tag, .iov_len = 1};
	char ctl[CMSG_SPACE(2 * sizeof(int))];
	struct msghdr m = {.msg_iov = &io, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof(ctl)};
	if (recvmsg(sv[1], &m, MSG_DONTWAIT) != 1)
		return -1;
	struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
	if (!cm || cm->cmsg_type != SCM_RIGHTS)
		return 0;
	int n = (int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
	memcpy(fds, CMSG_DATA(cm), n * sizeof(int));
	return n;
}

static void arm(void)
{
	int p[2], q[2];
	if (pipe(p) || pipe(q))
		fr_die("pipe");
	if (write(p[1], "alone-bytes", 11) != 11 || write(q[1], "qq", 2) != 2)
		fr_die("write");
	if (fcntl(q[1], F_SETFL, O_NONBLOCK))
		fr_die("F_SETFL");
	close(p[1]);
	send_fds('P', &p[0], 1);
	close(p[0]);
	send_fds('Q', q, 2);
	close(q[0]);
	close(q[1]);
	char path[4200];
	snprintf(path, sizeof(path), "%s/flown", fr_dir);
	int f = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (f < 0 || write(f, "0123456789", 10) != 10)
		fr_die("file");
	close(f);
	f = open(path, O_RDWR | O_APPEND);
	if (f < 0 || lseek(f, 7, SEEK_SET) != 7)
		fr_die("file again");
	send_fds('F', &f, 1);
	close(f);
}

static void check(void)
{
	char tag = 0, b[32];
	int fds[2] = {-1, -1};
	if (recv_fds(&tag, fds) != 1 || tag != 'P') {
		fr_status("BAD message 1 (tag %c) does not pass one descriptor", tag);
		return;
	}
	ssize_t r = read(fds[0], b, sizeof(b));
	ssize_t eof = read(fds[0], b + 16, 4);
	close(fds[0]);
	if (r != 11 || memcmp(b, "alone-bytes", 11) || eof != 0) {
		fr_status("BAD the lone pipe reads %zd bytes, then %zd (want its 11 bytes, then end of file)", r, eof);
		return;
	}
	if (recv_fds(&tag, fds) != 2 || tag != 'Q') {
		fr_status("BAD message 2 (tag %c) does not pass two descriptors", tag);
		return;
	}
	int rfl = fcntl(fds[0], F_GETFL), wfl = fcntl(fds[1], F_GETFL);
	if ((rfl & O_ACCMODE) != O_RDONLY || (rfl & O_NONBLOCK) || (wfl & O_ACCMODE) != O_WRONLY || !(wfl & O_NONBLOCK)) {
		fr_status("BAD the pipe ends' flags: read %#x, write %#x", rfl, wfl);
		return;
	}
	if (write(fds[1], "more", 4) != 4) {
		fr_status("BAD write through the received write end: %s", strerror(errno));
		return;
	}
	r = read(fds[0], b, sizeof(b));
	close(fds[0]);
	close(fds[1]);
	if (r != 6 || memcmp(b, "qqmore", 6)) {
		fr_status("BAD the two ends are not one pipe with its bytes (read %zd)", r);
		return;
	}
	if (recv_fds(&tag, fds) != 1 || tag != 'F') {
		fr_status("BAD message 3 (tag %c) does not pass one descriptor", tag);
		return;
	}
	off_t at = lseek(fds[0], 0, SEEK_CUR);
	int fl = fcntl(fds[0], F_GETFL);
	r = read(fds[0], b, sizeof(b));
	close(fds[0]);
	if (at != 7 || (fl & O_ACCMODE) != O_RDWR || !(fl & O_APPEND) || r != 3 || memcmp(b, "789", 3)) {
		fr_status("BAD the file: offset %lld, flags %#x, read %zd", (long long)at, fl, r);
		return;
	}
	arm();
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	signal(SIGPIPE, SIG_IGN);
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv))
		fr_die("socketpair");
	arm();
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
