/* An AF_PACKET socket with a receive ring (PACKET_RX_RING, TPACKET_V2) mapped by the process:
 * the ring's frames belong to both the kernel and the process, which a restore cannot share
 * again, so the dump must refuse, naming the ring. The check reads the ring's setup back.
 * compat-object: packet socket with a receive ring
 * compat-refuse: PACKET_RX_RING
 */
#include "common.h"

#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <sys/mman.h>
#include <sys/socket.h>

static int pk;

static void check(void)
{
	int v = -1;
	socklen_t l = sizeof(v);
	if (getsockopt(pk, SOL_PACKET, PACKET_VERSION, &v, &l) || v != TPACKET_V2) {
		fr_status("BAD PACKET_VERSION %d", v);
		return;
	}
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	pk = socket(AF_PACKET, SOCK_DGRAM, htons(ETH_P_IP));
	int v = TPACKET_V2;
	struct tpacket_req req = {.tp_block_size = 4096, .tp_block_nr = 2, .tp_frame_size = 2048, .tp_frame_nr = 4};
	if (pk < 0 || setsockopt(pk, SOL_PACKET, PACKET_VERSION, &v, sizeof(v)) ||
	    setsockopt(pk, SOL_PACKET, PACKET_RX_RING, &req, sizeof(req)))
		fr_die("packet ring");
	if (mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, pk, 0) == MAP_FAILED)
		fr_die("mmap");
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
