/* A memfd sealed F_SEAL_WRITE (no writable mapping, so allowed) and F_SEAL_FUTURE_WRITE on a
 * second one that stays mapped shared read-only: writes fail with EPERM, the contents and the
 * mapping are intact.
 * compat-object: memfd F_SEAL_WRITE and F_SEAL_FUTURE_WRITE
 */
#include "common.h"

#include <sys/mman.h>

static int w, fw;
static char *map;

static void check(void)
{
	if (fcntl(w, F_GET_SEALS) != F_SEAL_WRITE || fcntl(fw, F_GET_SEALS) != F_SEAL_FUTURE_WRITE) {
		fr_status("BAD seals %x %x", fcntl(w, F_GET_SEALS), fcntl(fw, F_GET_SEALS));
		return;
	}
	if (pwrite(w, "x", 1, 0) != -1 || errno != EPERM || pwrite(fw, "x", 1, 0) != -1 || errno != EPERM) {
		fr_status("BAD a write through a sealed memfd worked");
		return;
	}
	char b[5] = "";
	if (pread(w, b, 5, 0) != 5 || memcmp(b, "seal1", 5) || memcmp(map, "seal2", 5)) {
		fr_status("BAD contents");
		return;
	}
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	w = memfd_create("w", MFD_ALLOW_SEALING);
	fw = memfd_create("fw", MFD_ALLOW_SEALING);
	if (w < 0 || fw < 0 || pwrite(w, "seal1", 5, 0) != 5 || pwrite(fw, "seal2", 5, 0) != 5)
		fr_die("memfd");
	if (fcntl(w, F_ADD_SEALS, F_SEAL_WRITE) || fcntl(fw, F_ADD_SEALS, F_SEAL_FUTURE_WRITE))
		fr_die("seal");
	map = mmap(NULL, 4096, PROT_READ, MAP_SHARED, fw, 0);
	if (map == MAP_FAILED)
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
