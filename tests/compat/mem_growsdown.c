/* MAP_GROWSDOWN mapping: VmFlags "gd", contents, and it still grows down when the page below it
 * is touched (each check grows it by one page, up to 32).
 * compat-object: MAP_GROWSDOWN anonymous mapping
 */
#include "common.h"

#include <sys/mman.h>

#define PS 4096ul
static unsigned char *top;
static unsigned char *low; /* current lowest page */
static unsigned char *res;

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
	static char why[512];
	char fl[256];
	unsigned long s, e;
	if (!vma_of(top, &s, &e, fl, sizeof(fl)))
		return "no VMA";
	if (!has_flag(fl, "gd")) {
		snprintf(why, sizeof(why), "VMA lacks gd:%s", fl);
		return why;
	}
	if (s != (unsigned long)low || e != (unsigned long)top + 4 * PS) {
		snprintf(why, sizeof(why), "VMA %lx-%lx want %lx-%lx", s, e, (unsigned long)low,
			 (unsigned long)top + 4 * PS);
		return why;
	}
	for (unsigned char *p = low; p < top + 4 * PS; p += PS)
		if (p[0] != (unsigned char)((unsigned long)p / PS) || p[100] != 0x77)
			return "contents differ";
	if (low > res + 64 * PS) {
		unsigned char *n = low - PS;
		n[0] = (unsigned char)((unsigned long)n / PS); /* grows the area */
		n[100] = 0x77;
		if (!vma_of(top, &s, &e, fl, sizeof(fl)) || s != (unsigned long)n)
			return "touching the page below did not grow the area";
		low = n;
	}
	return NULL;
}

static void setup(void)
{
	/* room below it: a reservation, then the area at its top end */
	res = mmap(NULL, 128 * PS, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (res == MAP_FAILED)
		fr_die("mmap");
	munmap(res, 124 * PS);
	top = mmap(res + 124 * PS, 4 * PS, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS | MAP_GROWSDOWN | MAP_FIXED, -1, 0);
	if (top == MAP_FAILED)
		fr_die("mmap growsdown");
	low = top;
	for (unsigned char *p = top; p < top + 4 * PS; p += PS) {
		p[0] = (unsigned char)((unsigned long)p / PS);
		p[100] = 0x77;
	}
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
