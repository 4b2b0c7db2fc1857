/* A raw IPv4 socket for ICMP with ICMP_FILTER letting only echo replies through: an echo request
 * to 127.0.0.1 gets its reply (the filter and the protocol kept).
 * compat-object: raw ICMP socket with ICMP_FILTER
 */
#include "common.h"

#include <arpa/inet.h>
#include <linux/icmp.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

static int raw;
static uint16_t seq;

static uint16_t csum(const void *p, size_t n)
{
	const uint16_t *w = p;
	uint32_t s = 0;
	for (; n > 1; n -= 2)
		s += *w++;
	if (n)
		s += *(const uint8_t *)w;
	s = (s >> 16) + (s & 0xffff);
	s += s >> 16;
	return (uint16_t)~s;
}

static void check(void)
{
	struct icmp_filter f;
	socklen_t fl = sizeof(f);
	if (getsockopt(raw, SOL_RAW, ICMP_FILTER, &f, &fl) || f.data != ~(1u << ICMP_ECHOREPLY)) {
		fr_status("BAD ICMP_FILTER %x", f.data);
		return;
	}
	struct icmphdr h = {.type = ICMP_ECHO};
	h.un.echo.id = htons((uint16_t)getpid());
	h.un.echo.sequence = htons(++seq);
	h.checksum = csum(&h, sizeof(h));
	struct sockaddr_in to = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	if (sendto(raw, &h, sizeof(h), 0, (struct sockaddr *)&to, sizeof(to)) != sizeof(h)) {
		fr_status("BAD sendto: %s", strerror(errno));
		return;
	}
	double end = fr_now() + 1.0;
	while (fr_now() < end) {
		struct pollfd pf = {.fd = raw, .events = POLLIN};
		if (poll(&pf, 1, 100) != 1)
			continue;
		char buf[256];
		ssize_t n = recv(raw, buf, sizeof(buf), 0);
		if (n < 28)
			continue;
		struct icmphdr *r = (struct icmphdr *)(buf + 20);
		if (r->type == ICMP_ECHO) {
			fr_status("BAD the filter let an echo request through");
			return;
		}
		if (r->type == ICMP_ECHOREPLY && r->un.echo.sequence == htons(seq)) {
			fr_status("ok");
			return;
		}
	}
	fr_status("BAD no echo reply");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	raw = socket(AF_INET, SOCK_RAW, IPPROTO_ICMP);
	struct icmp_filter f = {.data = ~(1u << ICMP_ECHOREPLY)};
	if (raw < 0 || setsockopt(raw, SOL_RAW, ICMP_FILTER, &f, sizeof(f)))
		fr_die("raw");
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
