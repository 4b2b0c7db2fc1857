/* A file deleted while open: contents, size, offset, and the (deleted) name in /proc/self/fd.
 * compat-object: regular file deleted while open (contents, size, offset)
 */
#include "common.h"

static int fd;
static long pos = 3000;
static char want_link[4200];

static void check(void)
{
	struct stat st;
	fstat(fd, &st);
	if (st.st_size != 100000 || st.st_nlink != 0) {
		fr_status("BAD size %lld nlink %ld", (long long)st.st_size, (long)st.st_nlink);
		return;
	}
	if (lseek(fd, 0, SEEK_CUR) != pos) {
		fr_status("BAD offset %lld want %ld", (long long)lseek(fd, 0, SEEK_CUR), pos);
		return;
	}
	unsigned char *b = malloc(100000);
	if (pread(fd, b, 100000, 0) != 100000) {
		fr_status("BAD pread");
		free(b);
		return;
	}
	for (long i = 0; i < 100000; i++)
		if (b[i] != fr_data_byte(i)) {
			fr_status("BAD byte %ld differs", i);
			free(b);
			return;
		}
	free(b);
	char p[64], l[4200];
	snprintf(p, sizeof(p), "/proc/self/fd/%d", fd);
	ssize_t n = readlink(p, l, sizeof(l) - 1);
	l[n < 0 ? 0 : n] = 0;
	if (strcmp(l, want_link)) {
		fr_status("BAD link '%s' want '%s'", l, want_link);
		return;
	}
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	fr_write_data_file("gone", 100000);
	fd = fr_open_in_dir("gone", O_RDWR, 0);
	char path[4096];
	snprintf(path, sizeof(path), "%s/gone", fr_dir);
	if (unlink(path))
		fr_die("unlink");
	char p[64], l[4200];
	snprintf(p, sizeof(p), "/proc/self/fd/%d", fd);
	ssize_t n = readlink(p, l, sizeof(l) - 1);
	l[n < 0 ? 0 : n] = 0;
	strcpy(want_link, l);
	lseek(fd, pos, SEEK_SET);
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
