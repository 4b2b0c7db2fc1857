/* Helpers shared by the victims, in the spirit of CRIU's zdtm library.
 *
 * Every victim is started as `victim STATEDIR [args...]`. It writes:
 *   STATEDIR/status  lines (O_APPEND): "ready pid=N", then answers to checks:
 *                    "ok ..." when its invariants hold, "BAD ..." when not.
 *   STATEDIR/log     lines (O_APPEND): "tick N" from a counter kept in memory.
 * SIGUSR1 asks the victim to verify its invariants and report in the status file.
 * The victims never write to stdout or stderr after they are ready, except on purpose.
 */
#define _GNU_SOURCE
#pragma GCC diagnostic ignored "-Wunused-function"
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

static const char *fr_dir;
static int fr_status_fd = -1;
static int fr_log_fd = -1;
static pid_t fr_pid0;
static volatile sig_atomic_t fr_usr1_pending;
static volatile sig_atomic_t fr_usr1_count;

static void fr_write_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, buf, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			_exit(3);
		}
		buf += n;
		len -= (size_t)n;
	}
}

static void fr_die(const char *what)
{
	char buf[256];
	int n = snprintf(buf, sizeof(buf), "%s: %s\n", what, strerror(errno));
	fr_write_all(2, buf, (size_t)n);
	exit(2);
}

static void __attribute__((format(printf, 1, 2))) fr_status(const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof(buf) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if (n > (int)sizeof(buf) - 2)
		n = (int)sizeof(buf) - 2;
	buf[n++] = '\n';
	fr_write_all(fr_status_fd, buf, (size_t)n);
}

/* Async-signal-safe: "PREFIX N\n" into the status file. */
static void fr_status_sigsafe(const char *prefix, long v)
{
	char buf[128];
	size_t n = 0;
	while (*prefix && n < 80)
		buf[n++] = *prefix++;
	buf[n++] = ' ';
	char digits[24];
	int d = 0;
	unsigned long u = v < 0 ? (unsigned long)-v : (unsigned long)v;
	if (v < 0)
		buf[n++] = '-';
	do {
		digits[d++] = (char)('0' + u % 10);
		u /= 10;
	} while (u);
	while (d)
		buf[n++] = digits[--d];
	buf[n++] = '\n';
	fr_write_all(fr_status_fd, buf, n);
}

static void fr_log_tick(unsigned long n)
{
	char buf[64];
	int len = snprintf(buf, sizeof(buf), "tick %lu\n", n);
	fr_write_all(fr_log_fd, buf, (size_t)len);
}

static int fr_open_in_dir(const char *name, int flags, mode_t mode)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/%s", fr_dir, name);
	int fd = open(path, flags, mode);
	if (fd < 0)
		fr_die(path);
	return fd;
}

static void fr_usr1_handler(int sig)
{
	(void)sig;
	fr_usr1_pending = 1;
	fr_usr1_count++;
}

/* Report from inside the handler, for victims that sit in a restarted system call. */
static void fr_usr1_reporting_handler(int sig)
{
	int saved = errno;
	fr_usr1_handler(sig);
	fr_status_sigsafe("usr1", fr_usr1_count);
	errno = saved;
}

static void fr_install(int sig, void (*fn)(int), int flags)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = fn;
	sa.sa_flags = flags;
	sigemptyset(&sa.sa_mask);
	if (sigaction(sig, &sa, NULL))
		fr_die("sigaction");
}

static void fr_init(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: %s STATEDIR [args]\n", argv[0]);
		exit(2);
	}
	fr_dir = argv[1];
	fr_status_fd = fr_open_in_dir("status", O_WRONLY | O_CREAT | O_APPEND, 0644);
	fr_log_fd = fr_open_in_dir("log", O_WRONLY | O_CREAT | O_APPEND, 0644);
	fr_pid0 = getpid();
	fr_install(SIGUSR1, fr_usr1_handler, SA_RESTART);
}

static void fr_ready(void)
{
	fr_status("ready pid=%d", (int)getpid());
}

static double fr_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t fr_xorshift(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	*s = x;
	return x;
}

/* Fills a buffer with a pattern that is partly random, partly zero pages, partly repeated. */
static void fr_fill(unsigned char *buf, size_t len, uint64_t seed)
{
	uint64_t s = seed | 1;
	for (size_t off = 0; off < len; off += 4096) {
		size_t page = off / 4096;
		size_t n = len - off < 4096 ? len - off : 4096;
		if (page % 4 == 3) {
			memset(buf + off, 0, n);
		} else if (page % 4 == 2) {
			memset(buf + off, (int)(page & 0xff) | 1, n);
		} else {
			for (size_t i = 0; i + 8 <= n; i += 8) {
				uint64_t v = fr_xorshift(&s);
				memcpy(buf + off + i, &v, 8);
			}
		}
	}
}

static uint64_t fr_checksum(const unsigned char *buf, size_t len)
{
	uint64_t h = 1469598103934665603ull;
	for (size_t i = 0; i + 8 <= len; i += 8) {
		uint64_t v;
		memcpy(&v, buf + i, 8);
		h = (h ^ v) * 1099511628211ull;
		h ^= h >> 29;
	}
	return h;
}

/* Expected content of byte `i` of the data file that victims read partially. */
static unsigned char fr_data_byte(long i)
{
	return (unsigned char)((i * 7 + i / 251) & 0xff);
}

static void fr_write_data_file(const char *name, long len)
{
	int fd = fr_open_in_dir(name, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	unsigned char *b = malloc((size_t)len);
	if (!b)
		fr_die("malloc");
	for (long i = 0; i < len; i++)
		b[i] = fr_data_byte(i);
	fr_write_all(fd, (const char *)b, (size_t)len);
	free(b);
	close(fd);
}
