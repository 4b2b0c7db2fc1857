/* A regular file opened write-only, written part way: the offset, and that the next write lands
 * there (the file is read back through another descriptor).
 * compat-object: regular file offset after writes (O_WRONLY)
 */
#include "common.h"

static int fd, rd;
static long pos;
static int checks;

static void check(void)
{
	off_t cur = lseek(fd, 0, SEEK_CUR);
	if (cur != pos) {
		fr_status("BAD offset %lld, want %ld", (long long)cur, pos);
		return;
	}
	int fl = fcntl(fd, F_GETFL);
	if ((fl & O_ACCMODE) != O_WRONLY || (fl & O_APPEND)) {
		fr_status("BAD flags %o", fl);
		return;
	}
	char line[64];
	int n = snprintf(line, sizeof(line), "check %d\n", ++checks);
	if (write(fd, line, (size_t)n) != n) {
		fr_status("BAD write: %s", strerror(errno));
		return;
	}
	char back[64];
	if (pread(rd, back, (size_t)n, pos) != n || memcmp(back, line, (size_t)n)) {
		fr_status("BAD written bytes not at offset %ld", pos);
		return;
	}
	pos += n;
	struct stat st;
	fstat(rd, &st);
	if (st.st_size != 8192) {
		fr_status("BAD size %lld, want 8192", (long long)st.st_size);
		return;
	}
	fr_status("ok offset=%ld", pos);
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	fd = fr_open_in_dir("out", O_WRONLY | O_CREAT | O_TRUNC, 0644);
	rd = fr_open_in_dir("out", O_RDONLY, 0);
	char z[8192];
	memset(z, '.', sizeof(z));
	if (write(fd, z, sizeof(z)) != (ssize_t)sizeof(z))
		fr_die("write");
	pos = 1000;
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
