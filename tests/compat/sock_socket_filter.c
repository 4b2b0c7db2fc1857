/* A classic BPF socket filter (SO_ATTACH_FILTER) on a UDP socket that accepts only datagrams whose
 * first byte is 'A': SO_GET_FILTER reports 4 instructions, and a 'B' datagram is dropped while an
 * 'A' one passes. Also SO_LOCK_FILTER set.
 * compat-object: socket filter (SO_ATTACH_FILTER, SO_LOCK_FILTER)
 */
#include "common.h"

#include <arpa/inet.h>
#include <linux/filter.h>
#include <netinet/in.h>
#include <sys/socket.h>

static int r, s;
static struct sockaddr_in ra;

static void check(void)
{
	socklen_t n = 0;
	if (getsockopt(r, SOL_SOCKET, SO_GET_FILTER, NULL, &n) || n != 4) {
		fr_status("BAD SO_GET_FILTER: %u instructions (%s)", n, strerror(errno));
		return;
	}
	int lock = 0;
	socklen_t ll = sizeof(lock);
	getsockopt(r, SOL_SOCKET, SO_LOCK_FILTER, &lock, &ll);
	if (!lock) {
		fr_status("BAD SO_LOCK_FILTER lost");
		return;
	}
	sendto(s, "Bdropped", 8, 0, (struct sockaddr *)&ra, sizeof(ra));
	sendto(s, "Apassed", 7, 0, (struct sockaddr *)&ra, sizeof(ra));
	usleep(20000);
	char b[16];
	ssize_t got = recv(r, b, sizeof(b), MSG_DONTWAIT);
	if (got != 7 || b[0] != 'A') {
		fr_status("BAD first datagram %zd bytes '%c': the filter does not drop", got, got > 0 ? b[0] : '-');
		return;
	}
	if (recv(r, b, sizeof(b), MSG_DONTWAIT) != -1) {
		fr_status("BAD a second datagram arrived");
		return;
	}
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	r = socket(AF_INET, SOCK_DGRAM, 0);
	s = socket(AF_INET, SOCK_DGRAM, 0);
	ra.sin_family = AF_INET;
	ra.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t l = sizeof(ra);
	if (bind(r, (struct sockaddr *)&ra, sizeof(ra)) || getsockname(r, (struct sockaddr *)&ra, &l))
		fr_die("bind");
	/* UDP payload starts after the 8-byte UDP header: for UDP sockets the filter sees the packet
	 * from the UDP header. */
	struct sock_filter code[] = {
		BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 8),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 'A', 0, 1),
		BPF_STMT(BPF_RET | BPF_K, 0xffff),
		BPF_STMT(BPF_RET | BPF_K, 0),
	};
	struct sock_fprog prog = {.len = 4, .filter = code};
	int one = 1;
	if (setsockopt(r, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof(prog)) ||
	    setsockopt(r, SOL_SOCKET, SO_LOCK_FILTER, &one, sizeof(one)))
		fr_die("filter");
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
