/* MAP_NORESERVE private writable mapping next to a normal one: VmFlags "nr" only on it.
 * compat-object: MAP_NORESERVE mapping
 */
#include "common.h"

#include <sys/mman.h>

static unsigned char *m, *plain;

/* VmFlags (" xx yy ... ") and bounds of the VMA containing addr; 0 when none. */
static int vma_of(const void *addr, unsigned long *s, unsigned long *e, char *flags, size_t cap)
{
	static char buf[1 << 20];
	int fd = open("/proc/self/smaps", O_RDONLY);
	size_t n = 0;
	ssize_t r;
	while (fd >= 0 && n < sizeof(buf) - 1 && (r = read(fd, buf + n, sizeof(buf) - 1 - n)) > 0)
		n += (size_t)r;
	if (fd >= 0)
		close(fd);
	buf[n] = 0;
	unsigned long a = (unsigned long)addr;
	int in = 0;
	for (char *line = buf; line && *line;) {
		char *next = strchr(line, '\n');
		if (next)
			*next++ = 0;
		unsigned long x, y;
		char *sp = strchr(line, ' ');
		if (sp && !memchr(line, ':', (size_t)(sp - line)) && sscanf(line, "%lx-%lx ", &x, &y) == 2) {
			in = a >= x && a < y;
			if (in) {
				*s = x;
				*e = y;
			}
		} else if (in && !strncmp(line, "VmFlags:", 8)) {
			snprintf(flags, cap, "%s ", line + 8);
			return 1;
		}
		line = next;
	}
	return 0;
}

static int has_flag(const char *flags, const char *f)
{
	char pat[8];
	snprintf(pat, sizeof(pat), " %s ", f);
	return strstr(flags, pat) != NULL;
}

static const char *check(void)
{
	static char why[300];
	char fl[256];
	unsigned long s, e;
	if (!vma_of(m, &s, &e, fl, sizeof(fl)) || !has_flag(fl, "nr")) {
		snprintf(why, sizeof(why), "MAP_NORESERVE area lacks nr:%s", fl);
		return why;
	}
	if (!vma_of(plain, &s, &e, fl, sizeof(fl)) || has_flag(fl, "nr"))
		return "the plain area has nr";
	if (m[12345] != 3 || plain[5] != 4)
		return "bytes differ";
	return NULL;
}

static void setup(void)
{
	m = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	plain = mmap(NULL, 1 << 16, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED || plain == MAP_FAILED)
		fr_die("mmap");
	m[12345] = 3;
	plain[5] = 4;
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
