/* Write tracking victim: 256 pages of private anonymous memory, all touched.
 *
 *   live_track STATEDIR
 *
 * Writes "area addr=A pages=256" before "ready". On SIGUSR1 it writes one byte into page 5
 * itself (a user-mode write) and reads 64 bytes of /dev/zero into page 9 (the kernel writes),
 * then answers "ok wrote 5 9".
 */
#include "common.h"

#include <sys/mman.h>

#define PAGES 256

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	unsigned char *area = mmap(NULL, PAGES * 4096, PROT_READ | PROT_WRITE,
				   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (area == MAP_FAILED)
		fr_die("mmap");
	for (int i = 0; i < PAGES; i++)
		area[i * 4096] = (unsigned char)(i + 1);
	int zero = open("/dev/zero", O_RDONLY | O_CLOEXEC);
	if (zero < 0)
		fr_die("/dev/zero");
	fr_status("area addr=%p pages=%d", (void *)area, PAGES);
	fr_ready();
	unsigned long tick = 0;
	for (;;) {
		if (fr_usr1_pending) {
			fr_usr1_pending = 0;
			area[5 * 4096 + 100] ^= 0xff;
			if (read(zero, area + 9 * 4096 + 8, 64) != 64)
				fr_die("read /dev/zero");
			fr_status("ok wrote 5 9");
		}
		fr_log_tick(++tick);
		usleep(10000);
	}
}
