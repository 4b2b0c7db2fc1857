/* One file opened twice: two open file descriptions with their own offsets and flags.
 * compat-object: one file, two independent open file descriptions
 */
#include "common.h"

static int a, b;
static long pa = 100, pb = 5000;

static void check(void)
{
	if (lseek(a, 0, SEEK_CUR) != pa || lseek(b, 0, SEEK_CUR) != pb) {
		fr_status("BAD offsets %lld %lld want %ld %ld", (long long)lseek(a, 0, SEEK_CUR),
			  (long long)lseek(b, 0, SEEK_CUR), pa, pb);
		return;
	}
	unsigned char x;
	if (read(a, &x, 1) != 1 || x != fr_data_byte(pa)) {
		fr_status("BAD read a");
		return;
	}
	pa++;
	if (lseek(b, 0, SEEK_CUR) != pb) {
		fr_status("BAD reading a moved b: the two descriptions became one");
		return;
	}
	if ((fcntl(a, F_GETFL) & O_NONBLOCK) || !(fcntl(b, F_GETFL) & O_NONBLOCK)) {
		fr_status("BAD status flags shared or lost");
		return;
	}
	fr_status("ok pa=%ld pb=%ld", pa, pb);
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	fr_write_data_file("data", 65536);
	a = fr_open_in_dir("data", O_RDONLY, 0);
	b = fr_open_in_dir("data", O_RDONLY | O_NONBLOCK, 0);
	lseek(a, pa, SEEK_SET);
	lseek(b, pb, SEEK_SET);
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
