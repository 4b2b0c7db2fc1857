/* fdkinds_paths STATEDIR tmpfile | symlink
 *
 *   tmpfile  an O_TMPFILE file (never named) in STATEDIR: 5000 bytes, mode 0604, offset 1234;
 *            each check: still unnamed (nlink 0), same bytes, mode and offset, its flags still
 *            say O_TMPFILE (the test gives it a name once, with linkat: a file made
 *            O_TMPFILE without O_EXCL can be linked, once)
 *   symlink  a symbolic link itself held with O_PATH|O_NOFOLLOW: still the link (S_ISLNK, its
 *            inode), readlinkat(fd, "") still gives its target
 * Reports "fds fd=N" and SIGUSR1: "ok checks=N", or "BAD ...".
 */
#include "common.h"

static const char *mode;
static int fd, checks;
static ino_t want_ino;

static int check_tmpfile(void)
{
	struct stat st;
	if (fstat(fd, &st) || st.st_nlink != 0 || (st.st_mode & 07777) != 0604 ||
	    st.st_size != 5000) {
		fr_status("BAD nlink %ld mode %o size %lld", (long)st.st_nlink, st.st_mode & 07777,
			  (long long)st.st_size);
		return 0;
	}
	if (lseek(fd, 0, SEEK_CUR) != 1234) {
		fr_status("BAD offset %lld", (long long)lseek(fd, 0, SEEK_CUR));
		return 0;
	}
	int fl = fcntl(fd, F_GETFL);
	if ((fl & O_TMPFILE) != O_TMPFILE || (fl & O_ACCMODE) != O_RDWR) {
		fr_status("BAD flags %o", fl);
		return 0;
	}
	unsigned char b[16];
	if (pread(fd, b, 16, 4000) != 16 || b[3] != fr_data_byte(4003)) {
		fr_status("BAD contents");
		return 0;
	}
	return 1;
}

static int check_symlink(void)
{
	struct stat st;
	if (fstatat(fd, "", &st, AT_EMPTY_PATH) || !S_ISLNK(st.st_mode) || st.st_ino != want_ino) {
		fr_status("BAD not the link itself (mode %o)", st.st_mode);
		return 0;
	}
	char t[256] = "";
	ssize_t len = readlinkat(fd, "", t, sizeof(t) - 1);
	if (len < 0 || strcmp(t, "no/such/target")) {
		fr_status("BAD readlinkat: %s", len < 0 ? strerror(errno) : t);
		return 0;
	}
	int fl = fcntl(fd, F_GETFL);
	if (!(fl & O_PATH) || !(fl & O_NOFOLLOW)) {
		fr_status("BAD flags %o", fl);
		return 0;
	}
	return 1;
}

static void check(void)
{
	if (!strcmp(mode, "tmpfile") ? check_tmpfile() : check_symlink())
		fr_status("ok checks=%d", ++checks);
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	mode = argc > 2 ? argv[2] : "tmpfile";
	if (!strcmp(mode, "tmpfile")) {
		fd = open(fr_dir, O_TMPFILE | O_RDWR, 0604);
		if (fd < 0)
			fr_die("O_TMPFILE");
		unsigned char b[5000];
		for (int i = 0; i < 5000; i++)
			b[i] = fr_data_byte(i);
		if (write(fd, b, 5000) != 5000)
			fr_die("write");
		fchmod(fd, 0604);
		lseek(fd, 1234, SEEK_SET);
	} else if (!strcmp(mode, "symlink")) {
		char p[4096];
		snprintf(p, sizeof(p), "%s/link", fr_dir);
		if (symlink("no/such/target", p))
			fr_die("symlink");
		fd = open(p, O_PATH | O_NOFOLLOW);
		struct stat st;
		if (fd < 0 || lstat(p, &st))
			fr_die("open the link");
		want_ino = st.st_ino;
	} else {
		fprintf(stderr, "unknown mode %s\n", mode);
		return 2;
	}
	fr_status("fds fd=%d", fd);
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
