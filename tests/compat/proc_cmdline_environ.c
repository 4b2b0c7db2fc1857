/* The command line and environment as /proc/self/cmdline and /proc/self/environ show them (a
 * variable set before exec with a long value): unchanged, and argv/environ memory intact.
 * compat-object: command line and environment (/proc/self/cmdline, environ)
 */
#include "common.h"

extern char **environ;
static char cmd0[8192], env0[65536];
static ssize_t ncmd, nenv;

static ssize_t slurp(const char *p, char *b, size_t cap)
{
	int fd = open(p, O_RDONLY);
	ssize_t n = 0, r;
	while (fd >= 0 && (r = read(fd, b + n, cap - (size_t)n)) > 0)
		n += r;
	if (fd >= 0)
		close(fd);
	return n;
}

static const char *check(void)
{
	static char c[8192], e[65536];
	if (slurp("/proc/self/cmdline", c, sizeof(c)) != ncmd || memcmp(c, cmd0, (size_t)ncmd))
		return "/proc/self/cmdline differs";
	if (slurp("/proc/self/environ", e, sizeof(e)) != nenv || memcmp(e, env0, (size_t)nenv))
		return "/proc/self/environ differs";
	const char *v = getenv("FERRY_COMPAT_ENV");
	if (!v || strlen(v) != 3000 || v[2999] != 'q')
		return "the environment variable differs";
	return NULL;
}

static void setup(void)
{
	ncmd = slurp("/proc/self/cmdline", cmd0, sizeof(cmd0));
	nenv = slurp("/proc/self/environ", env0, sizeof(env0));
}

int main(int argc, char **argv);
static int real_main(int argc, char **argv);
#define main real_main

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
	return 0;
}
#undef main

int main(int argc, char **argv)
{
	if (!getenv("FERRY_COMPAT_ENV")) {
		char v[3001];
		memset(v, 'q', 3000);
		v[3000] = 0;
		setenv("FERRY_COMPAT_ENV", v, 1);
		execv("/proc/self/exe", argv);
		return 2;
	}
	return real_main(argc, argv);
}
