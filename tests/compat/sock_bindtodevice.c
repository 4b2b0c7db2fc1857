/* A UDP socket bound to the lo device (SO_BINDTODEVICE): it reads back "lo".
 * compat-object: SO_BINDTODEVICE
 */
#include "common.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

static int u;

static void check(void)
{
	char dev[32] = "";
	socklen_t l = sizeof(dev);
	if (getsockopt(u, SOL_SOCKET, SO_BINDTODEVICE, dev, &l) || strcmp(dev, "lo")) {
		fr_status("BAD SO_BINDTODEVICE '%s'", dev);
		return;
	}
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	u = socket(AF_INET, SOCK_DGRAM, 0);
	if (u < 0 || setsockopt(u, SOL_SOCKET, SO_BINDTODEVICE, "lo", 3))
		fr_die("bindtodevice");
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
