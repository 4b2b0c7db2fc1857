/* A directory open and read part way with getdents64: the entries that come next.
 * compat-object: open directory with a getdents position
 */
#include "common.h"

#include <dirent.h>
#include <sys/syscall.h>

static int fd;
static char rest[8192];
static off_t pos;

static void names(char *out, size_t cap)
{
	char buf[8192];
	out[0] = 0;
	for (;;) {
		long n = syscall(SYS_getdents64, fd, buf, sizeof(buf));
		if (n <= 0)
			break;
		for (long off = 0; off < n;) {
			struct dirent64 *d = (struct dirent64 *)(buf + off);
			strncat(out, d->d_name, cap - strlen(out) - 2);
			strcat(out, ",");
			off += d->d_reclen;
		}
	}
}

static void check(void)
{
	if (lseek(fd, 0, SEEK_CUR) != pos) {
		fr_status("BAD directory position %lld want %lld", (long long)lseek(fd, 0, SEEK_CUR),
			  (long long)pos);
		return;
	}
	char got[8192];
	names(got, sizeof(got));
	lseek(fd, pos, SEEK_SET);
	if (strcmp(got, rest)) {
		fr_status("BAD entries after the position differ");
		return;
	}
	fr_status("ok rest=%zu bytes", strlen(rest));
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	char p[4096];
	snprintf(p, sizeof(p), "%s/d", fr_dir);
	mkdir(p, 0755);
	for (int i = 0; i < 200; i++) {
		char n[64];
		snprintf(n, sizeof(n), "d/entry-%03d", i);
		close(fr_open_in_dir(n, O_WRONLY | O_CREAT, 0644));
	}
	fd = fr_open_in_dir("d", O_RDONLY | O_DIRECTORY, 0);
	char buf[1024];
	if (syscall(SYS_getdents64, fd, buf, sizeof(buf)) <= 0)
		fr_die("getdents");
	pos = lseek(fd, 0, SEEK_CUR);
	names(rest, sizeof(rest));
	lseek(fd, pos, SEEK_SET);
	if (!rest[0])
		fr_die("nothing left");
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
