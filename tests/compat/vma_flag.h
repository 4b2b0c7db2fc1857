/* The body shared by the victims of one memory-area flag: pages 2-5 of an 8-page anonymous
 * area (so its VMA is split) get the flag, with contents. The check: the VMA [2,6) exists with
 * VmFlags VMA_FLAG, the neighbours lack it, the bytes are intact, and the victim's own extra().
 * The including victim defines VMA_FLAG ("dd"), VMA_APPLY (the call that sets it, on
 * area + 2 * PS for 4 * PS) and, after the include, extra().
 */
#define VMA_STR2(x) #x
#define VMA_STR(x) VMA_STR2(x)

#include "common.h"

#include <sys/mman.h>
#include <sys/wait.h>

#ifndef MLOCK_ONFAULT
#define MLOCK_ONFAULT 1
#endif
#define PS 4096ul
static unsigned char *area;

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

static unsigned char pat(unsigned long i)
{
	return (unsigned char)(i * 31 + i / PS + 7);
}

/* What the including victim checks beyond the flag and the bytes (NULL: all is well). */
static const char *extra(void);

static const char *check(void)
{
	static char why[512];
	char fl[256];
	unsigned long s, e;
	if (!vma_of(area + 2 * PS, &s, &e, fl, sizeof(fl)))
		return "no VMA at page 2";
	if (s != (unsigned long)area + 2 * PS || e != (unsigned long)area + 6 * PS) {
		snprintf(why, sizeof(why), "VMA of page 2 is %lx-%lx, want %lx-%lx", s, e,
			 (unsigned long)area + 2 * PS, (unsigned long)area + 6 * PS);
		return why;
	}
	if (!has_flag(fl, VMA_FLAG)) {
		snprintf(why, sizeof(why), "VMA lacks " VMA_FLAG ":%s", fl);
		return why;
	}
	if (!vma_of(area, &s, &e, fl, sizeof(fl)) || has_flag(fl, VMA_FLAG)) {
		snprintf(why, sizeof(why), "page 0 VMA has " VMA_FLAG " or is missing:%s", fl);
		return why;
	}
	for (unsigned long i = 0; i < 8 * PS; i++)
		if (area[i] != pat(i)) {
			snprintf(why, sizeof(why), "byte %lu is %u want %u", i, area[i], pat(i));
			return why;
		}
	return extra();
}

static void setup(void)
{
	unsigned char *res = mmap(NULL, 10 * PS, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (res == MAP_FAILED)
		fr_die("mmap");
	area = mmap(res + PS, 8 * PS, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
	if (area == MAP_FAILED)
		fr_die("mmap area");
	for (unsigned long i = 0; i < 8 * PS; i++)
		area[i] = pat(i);
	if (VMA_APPLY)
		fr_die(VMA_STR(VMA_APPLY));
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
