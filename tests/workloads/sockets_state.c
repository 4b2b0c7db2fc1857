/* Socket state beyond addresses and options. Usage: sockets_state STATEDIR MODE.
 *   shut:    shutdown bits: an unconnected UDP socket shut for reading, a connected one shut
 *            for writing, an unconnected Unix datagram socket shut for reading, one end of an
 *            established TCP connection inside the process shut for reading (dump it with
 *            --tcp-established).
 *   queues:  queued data on Unix sockets that have no live peer or a one-way one: a stream
 *            and a seqpacket
 *            socketpair end whose peer wrote and closed; an accepted connection whose client
 *            wrote and closed; a datagram socketpair end whose peer sent two datagrams and
 *            closed; a named datagram socket connected one way to another, with a datagram
 *            queued; a listener whose socket file was removed; a listener with a connection
 *            from the process not accepted yet.
 *   pending: a Unix listener with a connection from the process not accepted yet, into
 *            which the client has written (a dump with --leave-running refuses it).
 *   tcppending: a TCP connection from the process to its own listener, not accepted yet, that
 *            wrote into it (--leave-running refuses it; a dump that ends the process carries
 *            it): the listener polls readable and the client stays connected to it.
 *   dgramfrom: datagrams queued with their senders: on a UDP socket from another UDP socket of
 *            the process and from one closed since; on a Unix datagram socket bound to a path
 *            from a named socket of the process and from a closed one with an abstract name.
 *   closewait: a TCP connection inside the process that the client shut down for writing:
 *            the accepted end in CLOSE-WAIT (its peer's end of stream, then it still sends),
 *            the client in FIN-WAIT-2 (writing fails with EPIPE, it still receives).
 *   synsent: a non-blocking TCP connect in progress (SYN-SENT) to the process's own listener
 *            whose accept queue is full, which drops the SYN (the dump refuses it).
 * SIGUSR1 checks everything without consuming anything ("ok ..." or "BAD what").
 */
#include "common.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>

static socklen_t abstract(struct sockaddr_un *a, const char *what)
{
	memset(a, 0, sizeof(*a));
	a->sun_family = AF_UNIX;
	int n = snprintf(a->sun_path + 1, sizeof(a->sun_path) - 1, "ferry-state-%d-%s", (int)getpid(), what);
	return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n);
}

/* The queued bytes of a stream socket, peeked, and whether end of stream follows them. */
static int stream_holds(int fd, const char *want, char *why, size_t size)
{
	char buf[128];
	ssize_t n = recv(fd, buf, sizeof(buf), MSG_PEEK | MSG_DONTWAIT);
	if (n != (ssize_t)strlen(want) || memcmp(buf, want, (size_t)n)) {
		snprintf(why, size, "stream queue holds %zd bytes, want \"%s\"", n, want);
		return 0;
	}
	/* poll reports the peer's shutdown as POLLRDHUP */
	struct pollfd p = {.fd = fd, .events = POLLIN | POLLRDHUP};
	if (poll(&p, 1, 0) != 1 || !(p.revents & POLLRDHUP)) {
		snprintf(why, size, "no end of stream after the data (revents %#x)", p.revents);
		return 0;
	}
	return 1;
}

/* A socket shut for reading polls POLLRDHUP; the others (nothing queued) poll nothing. */
static int read_shut(int fd)
{
	struct pollfd p = {.fd = fd, .events = POLLIN | POLLRDHUP};
	return poll(&p, 1, 0) == 1 && (p.revents & POLLRDHUP);
}

/* eof: after the datagrams or records comes the end (the peer closed), not EAGAIN. */
static int peek_off_walk_eof(int fd, const char **want, int n, int eof, char *why, size_t size);
/* Walks the queue with MSG_PEEK and SO_PEEK_OFF: datagram i holds want[i] from from[i]. */
static int senders_are(int fd, const char **want, struct sockaddr_storage *from, socklen_t *fromlen, int n,
		       char *why, size_t size)
{
	int off = 0, ok = 1;
	setsockopt(fd, SOL_SOCKET, SO_PEEK_OFF, &off, sizeof(off));
	for (int i = 0; i < n && ok; i++) {
		char buf[64];
		struct sockaddr_storage f;
		socklen_t fl = sizeof(f);
		memset(&f, 0, sizeof(f));
		ssize_t got = recvfrom(fd, buf, sizeof(buf), MSG_PEEK | MSG_DONTWAIT, (struct sockaddr *)&f, &fl);
		if (got != (ssize_t)strlen(want[i]) || memcmp(buf, want[i], (size_t)got)) {
			snprintf(why, size, "datagram %d: %zd bytes, want \"%s\"", i, got, want[i]);
			ok = 0;
		} else if (fl != fromlen[i] || memcmp(&f, &from[i], fl)) {
			snprintf(why, size, "datagram %d (\"%s\") comes from another sender", i, want[i]);
			ok = 0;
		}
	}
	off = -1;
	setsockopt(fd, SOL_SOCKET, SO_PEEK_OFF, &off, sizeof(off));
	return ok;
}

static int peek_off_walk(int fd, const char **want, int n, char *why, size_t size)
{
	return peek_off_walk_eof(fd, want, n, 0, why, size);
}

static int peek_off_walk_eof(int fd, const char **want, int n, int eof, char *why, size_t size)
{
	int off = 0;
	if (setsockopt(fd, SOL_SOCKET, SO_PEEK_OFF, &off, sizeof(off)))
		return 0;
	for (int i = 0; i < n; i++) {
		char buf[64];
		ssize_t got = recv(fd, buf, sizeof(buf), MSG_PEEK | MSG_DONTWAIT);
		if (got != (ssize_t)strlen(want[i]) || memcmp(buf, want[i], (size_t)got)) {
			snprintf(why, size, "datagram %d: got %zd bytes, want \"%s\"", i, got, want[i]);
			off = -1;
			setsockopt(fd, SOL_SOCKET, SO_PEEK_OFF, &off, sizeof(off));
			return 0;
		}
	}
	char buf[64];
	ssize_t more = recv(fd, buf, sizeof(buf), MSG_PEEK | MSG_DONTWAIT);
	off = -1;
	setsockopt(fd, SOL_SOCKET, SO_PEEK_OFF, &off, sizeof(off));
	if (eof ? more != 0 : more >= 0) {
		snprintf(why, size, "after the queue: %zd, want %s", more, eof ? "end (0)" : "nothing (-1)");
		return 0;
	}
	return 1;
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	const char *mode = argc > 2 ? argv[2] : "shut";
	int udp_rd = -1, udp_wr = -1, ux_rd = -1, tcp_rd = -1, tcp_other = -1, tcp_fw2 = -1, tcp_pl = -1;
	struct sockaddr_in tcp_pa;
	int seq = -1, lclosed = -1, pair_a = -1, acc = -1, dg = -1, named = -1, removed = -1, lpend = -1, client = -1;
	struct sockaddr_un peer_addr;
	socklen_t peer_len = 0;
	char removed_path[100];
	if (!strcmp(mode, "shut")) {
		struct sockaddr_in a = {.sin_family = AF_INET};
		a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		socklen_t len = sizeof(a);
		udp_rd = socket(AF_INET, SOCK_DGRAM, 0);
		if (bind(udp_rd, (struct sockaddr *)&a, sizeof(a)))
			fr_die("bind");
		shutdown(udp_rd, SHUT_RD); /* ENOTCONN, but the bit is set */
		int target = socket(AF_INET, SOCK_DGRAM, 0);
		bind(target, (struct sockaddr *)&a, sizeof(a));
		getsockname(target, (struct sockaddr *)&a, &len);
		udp_wr = socket(AF_INET, SOCK_DGRAM, 0);
		if (connect(udp_wr, (struct sockaddr *)&a, sizeof(a)) || shutdown(udp_wr, SHUT_WR))
			fr_die("udp shutdown");
		ux_rd = socket(AF_UNIX, SOCK_DGRAM, 0);
		struct sockaddr_un u;
		socklen_t ul = abstract(&u, "shut");
		if (bind(ux_rd, (struct sockaddr *)&u, ul))
			fr_die("bind unix");
		shutdown(ux_rd, SHUT_RD);
		int l = socket(AF_INET, SOCK_STREAM, 0);
		a.sin_port = 0;
		if (bind(l, (struct sockaddr *)&a, sizeof(a)) || listen(l, 1))
			fr_die("listen");
		len = sizeof(a);
		getsockname(l, (struct sockaddr *)&a, &len);
		tcp_other = socket(AF_INET, SOCK_STREAM, 0);
		if (connect(tcp_other, (struct sockaddr *)&a, sizeof(a)))
			fr_die("connect");
		tcp_rd = accept(l, NULL, NULL);
		close(l);
		if (tcp_rd < 0 || shutdown(tcp_rd, SHUT_RD))
			fr_die("tcp shutdown");
	} else if (!strcmp(mode, "queues")) {
		int sv[2];
		if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv))
			fr_die("socketpair");
		pair_a = sv[0];
		if (write(sv[1], "tail data", 9) != 9)
			fr_die("write");
		close(sv[1]);

		struct sockaddr_un la;
		socklen_t ll = abstract(&la, "closed");
		int l = socket(AF_UNIX, SOCK_STREAM, 0);
		if (bind(l, (struct sockaddr *)&la, ll) || listen(l, 4))
			fr_die("listen");
		int c = socket(AF_UNIX, SOCK_STREAM, 0);
		if (connect(c, (struct sockaddr *)&la, ll))
			fr_die("connect");
		acc = accept(l, NULL, NULL);
		if (acc < 0 || write(c, "bye", 3) != 3)
			fr_die("accept");
		close(c);
		lclosed = l;
		/* the listener stays: a reconnection by name would be one more pending connection */

		if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv))
			fr_die("socketpair seqpacket");
		seq = sv[0];
		send(sv[1], "r1", 2, 0);
		send(sv[1], "record-2", 8, 0);
		close(sv[1]);

		if (socketpair(AF_UNIX, SOCK_DGRAM, 0, sv))
			fr_die("socketpair dgram");
		dg = sv[0];
		send(sv[1], "m1", 2, 0);
		send(sv[1], "m2-longer", 9, 0);
		close(sv[1]);

		named = socket(AF_UNIX, SOCK_DGRAM, 0);
		int other = socket(AF_UNIX, SOCK_DGRAM, 0);
		struct sockaddr_un na;
		socklen_t nl = abstract(&na, "named");
		peer_len = abstract(&peer_addr, "peer");
		if (bind(named, (struct sockaddr *)&na, nl) || bind(other, (struct sockaddr *)&peer_addr, peer_len))
			fr_die("bind dgram");
		int tmp = socket(AF_UNIX, SOCK_DGRAM, 0);
		if (sendto(tmp, "x1", 2, 0, (struct sockaddr *)&na, nl) != 2)
			fr_die("sendto");
		close(tmp);
		if (connect(named, (struct sockaddr *)&peer_addr, peer_len))
			fr_die("connect dgram");

		removed = socket(AF_UNIX, SOCK_STREAM, 0);
		struct sockaddr_un ra = {.sun_family = AF_UNIX};
		if (snprintf(removed_path, sizeof(removed_path), "%s/removed.sock", fr_dir) >= (int)sizeof(removed_path))
			fr_die("state directory path too long for a socket");
		memcpy(ra.sun_path, removed_path, sizeof(removed_path));
		if (bind(removed, (struct sockaddr *)&ra, sizeof(ra)) || listen(removed, 3) || unlink(removed_path))
			fr_die("removed listener");
	}
	if (!strcmp(mode, "tcppending")) {
		struct sockaddr_in a = {.sin_family = AF_INET};
		a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		socklen_t len = sizeof(a);
		int l = socket(AF_INET, SOCK_STREAM, 0);
		if (bind(l, (struct sockaddr *)&a, sizeof(a)) || listen(l, 1))
			fr_die("listen");
		getsockname(l, (struct sockaddr *)&a, &len);
		tcp_other = socket(AF_INET, SOCK_STREAM, 0);
		if (connect(tcp_other, (struct sockaddr *)&a, sizeof(a)) || write(tcp_other, "pending", 7) != 7)
			fr_die("connect");
		tcp_pl = l;
		tcp_pa = a;
	}
	int udp_r = -1, ux_r = -1;
	struct sockaddr_storage ufrom[3], xfrom[2];
	socklen_t ufl[3], xfl[2];
	if (!strcmp(mode, "dgramfrom")) {
		struct sockaddr_in a = {.sin_family = AF_INET};
		a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		socklen_t len = sizeof(a);
		udp_r = socket(AF_INET, SOCK_DGRAM, 0);
		int s1 = socket(AF_INET, SOCK_DGRAM, 0), s2 = socket(AF_INET, SOCK_DGRAM, 0);
		if (bind(udp_r, (struct sockaddr *)&a, sizeof(a)) || bind(s1, (struct sockaddr *)&a, sizeof(a)) ||
		    bind(s2, (struct sockaddr *)&a, sizeof(a)))
			fr_die("bind udp");
		getsockname(udp_r, (struct sockaddr *)&a, &len);
		int order[3] = {s1, s2, s1};
		const char *msg[3] = {"u-one", "u-two", "u-three"};
		for (int i = 0; i < 3; i++) {
			ufl[i] = sizeof(ufrom[i]);
			getsockname(order[i], (struct sockaddr *)&ufrom[i], &ufl[i]);
			if (sendto(order[i], msg[i], strlen(msg[i]), 0, (struct sockaddr *)&a, sizeof(a)) < 0)
				fr_die("sendto udp");
		}
		close(s2);
		/* a socket for datagrams from outside (the test's), reported as "ext=PORT" */
		int ext = socket(AF_INET, SOCK_DGRAM, 0);
		struct sockaddr_in e = {.sin_family = AF_INET};
		e.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		socklen_t el = sizeof(e);
		if (bind(ext, (struct sockaddr *)&e, sizeof(e)) || getsockname(ext, (struct sockaddr *)&e, &el))
			fr_die("bind ext");
		fr_status("ext=%d", ntohs(e.sin_port));

		ux_r = socket(AF_UNIX, SOCK_DGRAM, 0);
		int c1 = socket(AF_UNIX, SOCK_DGRAM, 0), c2 = socket(AF_UNIX, SOCK_DGRAM, 0);
		struct sockaddr_un ra = {.sun_family = AF_UNIX}, c1a = {.sun_family = AF_UNIX}, c2a;
		snprintf(ra.sun_path, sizeof(ra.sun_path), "%.80s/r.sock", fr_dir);
		snprintf(c1a.sun_path, sizeof(c1a.sun_path), "%.80s/c1.sock", fr_dir);
		socklen_t c2l = abstract(&c2a, "c2");
		if (bind(ux_r, (struct sockaddr *)&ra, sizeof(ra)) || bind(c1, (struct sockaddr *)&c1a, sizeof(c1a)) ||
		    bind(c2, (struct sockaddr *)&c2a, c2l))
			fr_die("bind unix");
		if (sendto(c1, "x-one", 5, 0, (struct sockaddr *)&ra, sizeof(ra)) != 5 ||
		    sendto(c2, "x-two", 5, 0, (struct sockaddr *)&ra, sizeof(ra)) != 5)
			fr_die("sendto unix");
		for (int i = 0; i < 2; i++) {
			xfl[i] = sizeof(xfrom[i]);
			getsockname(i ? c2 : c1, (struct sockaddr *)&xfrom[i], &xfl[i]);
		}
		close(c2);
	}
	if (!strcmp(mode, "closewait")) {
		struct sockaddr_in a = {.sin_family = AF_INET};
		a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		socklen_t len = sizeof(a);
		int l = socket(AF_INET, SOCK_STREAM, 0);
		if (bind(l, (struct sockaddr *)&a, sizeof(a)) || listen(l, 1))
			fr_die("listen");
		getsockname(l, (struct sockaddr *)&a, &len);
		int c = socket(AF_INET, SOCK_STREAM, 0);
		if (connect(c, (struct sockaddr *)&a, sizeof(a)))
			fr_die("connect");
		tcp_other = accept(l, NULL, NULL);
		close(l);
		if (tcp_other < 0 || shutdown(c, SHUT_WR))
			fr_die("shutdown");
		tcp_rd = -1;
		tcp_fw2 = c;
		usleep(100000);
	}
	if (!strcmp(mode, "synsent")) {
		struct sockaddr_in a = {.sin_family = AF_INET};
		a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		socklen_t len = sizeof(a);
		int l = socket(AF_INET, SOCK_STREAM, 0);
		if (bind(l, (struct sockaddr *)&a, sizeof(a)) || listen(l, 0))
			fr_die("listen");
		getsockname(l, (struct sockaddr *)&a, &len);
		int first = socket(AF_INET, SOCK_STREAM, 0);
		if (connect(first, (struct sockaddr *)&a, sizeof(a)))
			fr_die("connect");
		usleep(20000);
		int c = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
		if (connect(c, (struct sockaddr *)&a, sizeof(a)) == 0 || errno != EINPROGRESS)
			fr_die("connect in progress");
		usleep(100000);
	}
	if (!strcmp(mode, "queues") || !strcmp(mode, "pending")) {
		struct sockaddr_un pa;
		socklen_t pl = abstract(&pa, "pending");
		lpend = socket(AF_UNIX, SOCK_STREAM, 0);
		if (bind(lpend, (struct sockaddr *)&pa, pl) || listen(lpend, 4))
			fr_die("listen pending");
		client = socket(AF_UNIX, SOCK_STREAM, 0);
		if (connect(client, (struct sockaddr *)&pa, pl))
			fr_die("connect pending");
		if (!strcmp(mode, "pending") && write(client, "early", 5) != 5)
			fr_die("write pending");
	}
	fr_ready();
	unsigned long tick = 0;
	for (;;) {
		if (fr_usr1_pending) {
			fr_usr1_pending = 0;
			char why[256] = "";
			char buf[16];
			int ok = 1;
			if (udp_rd >= 0 && !read_shut(udp_rd)) {
				snprintf(why, sizeof(why), "UDP socket shut for reading does not poll POLLRDHUP");
				ok = 0;
			}
			if (ok && udp_wr >= 0) {
				ssize_t n = send(udp_wr, "x", 1, MSG_DONTWAIT | MSG_NOSIGNAL);
				if (n >= 0 || errno != EPIPE) {
					snprintf(why, sizeof(why), "UDP shut for writing: send gives %zd, want EPIPE", n);
					ok = 0;
				}
			}
			if (ok && ux_rd >= 0 && !read_shut(ux_rd)) {
				snprintf(why, sizeof(why), "Unix datagram socket shut for reading does not poll POLLRDHUP");
				ok = 0;
			}
			if (ok && tcp_rd >= 0) {
				ssize_t n = recv(tcp_rd, buf, sizeof(buf), MSG_DONTWAIT);
				if (n != 0) {
					snprintf(why, sizeof(why), "TCP shut for reading: recv gives %zd, want 0", n);
					ok = 0;
				}
			}
			if (ok && tcp_fw2 >= 0) {
				/* The CLOSE-WAIT end: end of stream (peeked), and it can still send; the
				 * FIN-WAIT-2 end receives that and cannot send. */
				ssize_t n = recv(tcp_other, buf, sizeof(buf), MSG_PEEK | MSG_DONTWAIT);
				struct pollfd p = {.fd = tcp_fw2, .events = POLLIN};
				if (n != 0) {
					snprintf(why, sizeof(why), "TCP CLOSE-WAIT end: recv gives %zd, want 0", n);
					ok = 0;
				} else if (write(tcp_other, "w", 1) != 1 || poll(&p, 1, 2000) != 1 ||
					   read(tcp_fw2, buf, sizeof(buf)) != 1) {
					snprintf(why, sizeof(why), "TCP CLOSE-WAIT end's byte does not reach the other end");
					ok = 0;
				} else if (send(tcp_fw2, "x", 1, MSG_NOSIGNAL) != -1 || errno != EPIPE) {
					snprintf(why, sizeof(why), "TCP FIN-WAIT-2 end can still send");
					ok = 0;
				}
			}
			if (ok && tcp_pl >= 0) {
				struct pollfd p = {.fd = tcp_pl, .events = POLLIN};
				struct sockaddr_in pa;
				socklen_t pl = sizeof(pa);
				if (poll(&p, 1, 0) != 1) {
					snprintf(why, sizeof(why), "TCP listener: no connection pending");
					ok = 0;
				} else if (getpeername(tcp_other, (struct sockaddr *)&pa, &pl) ||
					   pa.sin_port != tcp_pa.sin_port || pa.sin_addr.s_addr != tcp_pa.sin_addr.s_addr) {
					snprintf(why, sizeof(why), "TCP pending client: not connected to its listener");
					ok = 0;
				}
			}
			if (ok && pair_a >= 0)
				ok = stream_holds(pair_a, "tail data", why, sizeof(why));
			if (ok && acc >= 0)
				ok = stream_holds(acc, "bye", why, sizeof(why));
			if (ok && udp_r >= 0) {
				const char *want[] = {"u-one", "u-two", "u-three"};
				ok = senders_are(udp_r, want, ufrom, ufl, 3, why, sizeof(why));
			}
			if (ok && ux_r >= 0) {
				const char *want[] = {"x-one", "x-two"};
				ok = senders_are(ux_r, want, xfrom, xfl, 2, why, sizeof(why));
			}
			if (ok && seq >= 0) {
				const char *want[] = {"r1", "record-2"};
				ok = peek_off_walk_eof(seq, want, 2, 1, why, sizeof(why));
			}
			if (ok && dg >= 0) {
				const char *want[] = {"m1", "m2-longer"};
				ok = peek_off_walk(dg, want, 2, why, sizeof(why));
			}
			if (ok && named >= 0) {
				const char *want[] = {"x1"};
				ok = peek_off_walk(named, want, 1, why, sizeof(why));
				struct sockaddr_un got;
				socklen_t gl = sizeof(got);
				if (ok && (getpeername(named, (struct sockaddr *)&got, &gl) || gl != peer_len ||
					   memcmp(&got, &peer_addr, gl))) {
					snprintf(why, sizeof(why), "the named datagram socket's peer differs");
					ok = 0;
				}
			}
			if (ok && removed >= 0) {
				struct sockaddr_un got;
				socklen_t gl = sizeof(got);
				int acc_on = 0;
				socklen_t al = sizeof(acc_on);
				struct stat st;
				getsockopt(removed, SOL_SOCKET, SO_ACCEPTCONN, &acc_on, &al);
				if (getsockname(removed, (struct sockaddr *)&got, &gl) || strcmp(got.sun_path, removed_path)) {
					snprintf(why, sizeof(why), "the listener whose file was removed lost its name");
					ok = 0;
				} else if (!acc_on) {
					snprintf(why, sizeof(why), "the listener whose file was removed does not listen");
					ok = 0;
				} else if (stat(removed_path, &st) == 0) {
					snprintf(why, sizeof(why), "the removed socket file is back");
					ok = 0;
				}
			}
			if (ok && lpend >= 0) {
				struct pollfd p = {.fd = lpend, .events = POLLIN};
				if (poll(&p, 1, 0) != 1) {
					snprintf(why, sizeof(why), "no connection waits to be accepted");
					ok = 0;
				}
			}
			if (ok && lclosed >= 0) {
				struct pollfd p = {.fd = lclosed, .events = POLLIN};
				if (poll(&p, 1, 0) != 0) {
					snprintf(why, sizeof(why), "a connection the process never made waits on its listener");
					ok = 0;
				}
			}
			if (ok)
				fr_status("ok pid=%d mode=%s", (int)getpid(), mode);
			else
				fr_status("BAD %s", why);
		}
		fr_log_tick(tick++);
		usleep(10000);
	}
}
