/* Mappings at fixed low addresses (0x10000 above mmap_min_addr, and 0x200000000) made with
 * MAP_FIXED_NOREPLACE: same addresses, bytes, and executable protection on one.
 * compat-object: mappings at fixed addresses (low, MAP_FIXED_NOREPLACE)
 */
#include "common.h"

#include <sys/mman.h>

static unsigned char *a = (unsigned char *)0x10000, *b = (unsigned char *)0x200000000ul;

static const char *check(void)
{
	if (a[0] != 'a' || a[4095] != 'z' || b[0] != 'B')
		return "bytes differ";
	char line[512];
	int ok = 0;
	FILE *f = fopen("/proc/self/maps", "r");
	while (f && fgets(line, sizeof(line), f)) {
		if (!strncmp(line, "00010000-00011000 rw-p", 22))
			ok |= 1;
		if (!strncmp(line, "200000000-200002000 r-xp", 24))
			ok |= 2;
	}
	if (f)
		fclose(f);
	if (ok != 3)
		return "the fixed areas are not where they were (or protections differ)";
	return NULL;
}

static void setup(void)
{
	if (mmap(a, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0) != a)
		fr_die("mmap 0x10000");
	if (mmap(b, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0) != b)
		fr_die("mmap 0x200000000");
	a[0] = 'a';
	a[4095] = 'z';
	b[0] = 'B';
	mprotect(b, 8192, PROT_READ | PROT_EXEC);
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	setup();
	fr_ready();
	for (unsigned long tick = 1;; tick++) {
		if (fr_usr1_pending) {
			fr_usr1_pending = 0;
			const char *why = getpid() != fr_pid0 ? "getpid() changed" : check();
			if (why)
				fr_status("BAD %s", why);
			else
				fr_status("ok pid=%d", (int)getpid());
		}
		fr_log_tick(tick);
		usleep(10000);
	}
}
