/* Descriptors and credentials in flight: messages queued in Unix socketpairs of the process
 * carry descriptors (SCM_RIGHTS) and, on a receiver with SO_PASSCRED, the sender's
 * credentials (SCM_CREDENTIALS). Between checks the datagram pair holds three messages:
 * "msg-file N" passing a file nobody else holds (opened, moved to offset 3, closed after
 * sending) and "msg-pipe N" passing the read end of a pipe the process still holds (with
 * "pipe N" queued in the pipe: the very same open file description, kcmp says), then
 * "msg-plain N" with credentials only; the stream pair holds "stream N" passing a second file at
 * offset 5. A check receives them all and verifies bytes, descriptors (same file, same
 * offset, same pipe) and credentials (the process's pid, uid and gid), then queues the next
 * round. Usage: scm_inflight STATEDIR [orphan]; with "orphan" a third pair also holds an
 * eventfd no process holds any more (which ferry refuses to dump: pipes and files nobody holds
 * are carried, other kinds not yet); so it does when compiled with -DSCM_ORPHAN. */
#include "common.h"

#include <linux/kcmp.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>

static int dg[2], st[2], orphan[2], pp[2];
static ino_t data_ino, data2_ino;
static int round_no;

static void send_fds(int sock, const char *msg, const int *fds, int n)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * 4)];
		struct cmsghdr align;
	} u;
	struct iovec iov = {(void *)msg, strlen(msg)};
	struct msghdr mh = {0};
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	mh.msg_control = u.buf;
	mh.msg_controllen = CMSG_SPACE(sizeof(int) * n);
	struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int) * n);
	memcpy(CMSG_DATA(c), fds, sizeof(int) * n);
	if (sendmsg(sock, &mh, MSG_DONTWAIT) != (ssize_t)strlen(msg))
		fr_die("sendmsg");
}

/* Receives one message; returns its length, the first passed fd (or -1) and the creds. */
static int recv_one(int sock, char *buf, size_t len, int *fd, struct ucred *cr, int *has_cr)
{
	union {
		char b[CMSG_SPACE(sizeof(int) * 4) + CMSG_SPACE(sizeof(struct ucred))];
		struct cmsghdr align;
	} u;
	struct iovec iov = {buf, len - 1};
	struct msghdr mh = {0};
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	mh.msg_control = u.b;
	mh.msg_controllen = sizeof u.b;
	ssize_t n = recvmsg(sock, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
	*fd = -1;
	*has_cr = 0;
	if (n < 0)
		return -1;
	buf[n] = 0;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
			memcpy(fd, CMSG_DATA(c), sizeof(int));
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS) {
			memcpy(cr, CMSG_DATA(c), sizeof *cr);
			*has_cr = 1;
		}
	}
	return (int)n;
}

static int open_at(const char *name, off_t pos, ino_t *ino)
{
	int f = fr_open_in_dir(name, O_RDONLY, 0);
	struct stat sb;
	fstat(f, &sb);
	*ino = sb.st_ino;
	lseek(f, pos, SEEK_SET);
	return f;
}

static void arm(void)
{
	char msg[64];
	int f = open_at("data", 3, &data_ino);
	snprintf(msg, sizeof msg, "msg-file %d", round_no);
	send_fds(dg[0], msg, &f, 1);
	close(f);
	snprintf(msg, sizeof msg, "pipe %d", round_no);
	if (write(pp[1], msg, strlen(msg)) != (ssize_t)strlen(msg))
		fr_die("write pipe");
	snprintf(msg, sizeof msg, "msg-pipe %d", round_no);
	send_fds(dg[0], msg, &pp[0], 1);
	snprintf(msg, sizeof msg, "msg-plain %d", round_no);
	if (send(dg[0], msg, strlen(msg), MSG_DONTWAIT) != (ssize_t)strlen(msg))
		fr_die("send");
	f = open_at("data2", 5, &data2_ino);
	snprintf(msg, sizeof msg, "stream %d", round_no);
	send_fds(st[0], msg, &f, 1);
	close(f);
}

static void check(void)
{
	char buf[256], want[64], got[64];
	int fd, has;
	struct ucred cr;
	struct stat sb;
	if (getpid() != fr_pid0)
		return fr_status("BAD pid %d, was %d", (int)getpid(), (int)fr_pid0);

	snprintf(want, sizeof want, "msg-file %d", round_no);
	int n = recv_one(dg[1], buf, sizeof buf, &fd, &cr, &has);
	if (n < 0 || strcmp(buf, want))
		return fr_status("BAD first datagram %d %s (want %s): %s", n, n < 0 ? "" : buf, want,
				 n < 0 ? strerror(errno) : "");
	if (fd < 0)
		return fr_status("BAD no descriptor with %s", want);
	if (!has || cr.pid != getpid() || cr.uid != getuid() || cr.gid != getgid())
		return fr_status("BAD credentials with %s: has=%d pid=%d uid=%d gid=%d", want, has,
				 (int)cr.pid, (int)cr.uid, (int)cr.gid);
	if (fstat(fd, &sb) || sb.st_ino != data_ino)
		return fr_status("BAD file in flight is another file");
	n = (int)read(fd, got, sizeof got - 1);
	got[n < 0 ? 0 : n] = 0;
	close(fd);
	if (strcmp(got, "3456789\n"))
		return fr_status("BAD file in flight reads %s (offset lost?)", got);

	snprintf(want, sizeof want, "msg-pipe %d", round_no);
	n = recv_one(dg[1], buf, sizeof buf, &fd, &cr, &has);
	if (n < 0 || strcmp(buf, want))
		return fr_status("BAD second datagram %s (want %s)", n < 0 ? strerror(errno) : buf, want);
	/* The very open file description of our read end, not a copy. */
	if (fd < 0 || syscall(SYS_kcmp, getpid(), getpid(), KCMP_FILE, fd, pp[0]) != 0)
		return fr_status("BAD pipe in flight is not our pipe's read end");
	if (!has || cr.pid != getpid())
		return fr_status("BAD credentials with %s", want);
	snprintf(want, sizeof want, "pipe %d", round_no);
	n = (int)read(fd, got, strlen(want));
	got[n < 0 ? 0 : n] = 0;
	close(fd);
	if (strcmp(got, want))
		return fr_status("BAD pipe in flight reads %s (want %s)", got, want);

	/* Credentials only. */
	snprintf(want, sizeof want, "msg-plain %d", round_no);
	n = recv_one(dg[1], buf, sizeof buf, &fd, &cr, &has);
	if (n < 0 || strcmp(buf, want))
		return fr_status("BAD third datagram %s (want %s)", n < 0 ? strerror(errno) : buf, want);
	if (fd >= 0)
		return fr_status("BAD a descriptor came with %s", want);
	if (!has || cr.pid != getpid() || cr.uid != getuid() || cr.gid != getgid())
		return fr_status("BAD credentials with %s: has=%d pid=%d", want, has, (int)cr.pid);

	snprintf(want, sizeof want, "stream %d", round_no);
	n = recv_one(st[1], buf, sizeof buf, &fd, &cr, &has);
	if (n < 0 || strcmp(buf, want))
		return fr_status("BAD stream %s (want %s)", n < 0 ? strerror(errno) : buf, want);
	if (fd < 0 || fstat(fd, &sb) || sb.st_ino != data2_ino)
		return fr_status("BAD file in flight on the stream is another file");
	n = (int)read(fd, got, sizeof got - 1);
	got[n < 0 ? 0 : n] = 0;
	close(fd);
	if (strcmp(got, "fghij\n"))
		return fr_status("BAD file in flight on the stream reads %s", got);
	if (recv_one(dg[1], buf, sizeof buf, &fd, &cr, &has) >= 0 ||
	    recv_one(st[1], buf, sizeof buf, &fd, &cr, &has) >= 0)
		return fr_status("BAD more messages queued than sent: %s", buf);
	round_no++;
	arm();
	fr_status("ok checks=%d", round_no);
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	int f = fr_open_in_dir("data", O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (write(f, "0123456789\n", 11) != 11)
		fr_die("write data");
	close(f);
	f = fr_open_in_dir("data2", O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (write(f, "abcdefghij\n", 11) != 11)
		fr_die("write data2");
	close(f);
	if (socketpair(AF_UNIX, SOCK_DGRAM, 0, dg) || socketpair(AF_UNIX, SOCK_STREAM, 0, st))
		fr_die("socketpair");
	int one = 1;
	if (setsockopt(dg[1], SOL_SOCKET, SO_PASSCRED, &one, sizeof one))
		fr_die("SO_PASSCRED");
	if (pipe(pp))
		fr_die("pipe");
	int want_orphan = argc > 2 && strcmp(argv[2], "orphan") == 0;
#ifdef SCM_ORPHAN
	want_orphan = 1;
#endif
	if (want_orphan) {
		int e = eventfd(3, 0);
		if (socketpair(AF_UNIX, SOCK_DGRAM, 0, orphan) || e < 0)
			fr_die("orphan");
		send_fds(orphan[0], "orphan", &e, 1);
		close(e);
	}
	arm();
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
