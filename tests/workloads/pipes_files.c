/* Regular files shared through dup, a file deleted while open, and locks.
 * compat-object: shared file offsets, a deleted file, locks
 *
 *   fds "shared" and 41 (dup) and 42 (dup2): one open file description at offset 1234;
 *   "other": a second open of the same file, at offset 99.
 *   "deleted": 300000 bytes, mode 0640, unlinked, offset 777; a dup at fd 43.
 *   flock LOCK_EX on "flocked"; POSIX write lock on bytes 100..199 and read lock from 500 to
 *   the end of "posix"; an OFD write lock on byte 0 of "ofd"; a read lease on "leased".
 * SIGUSR1 checks offsets, shared descriptions (kcmp), the deleted file's bytes and its
 * "(deleted)" link, and the lease; the test checks the locks from outside.
 */
#include "common.h"
#include <sys/file.h>
#include <sys/syscall.h>
#include <linux/kcmp.h>

#define SHARED_LEN 10000
#define DEL_LEN 300000

static int sh, sh_dup, sh_dup2, other, del, del_dup, flocked, posix, ofd, leased;

static int same(int x, int y) { return syscall(SYS_kcmp, getpid(), getpid(), KCMP_FILE, x, y) == 0; }
static unsigned char dpat(long i) { return (unsigned char)((i * 31 + i / 509) & 0xff); }

static void check(void)
{
	if (!same(sh, sh_dup) || !same(sh, sh_dup2) || same(sh, other) || !same(del, del_dup)) {
		fr_status("BAD descriptions: dup %d dup2 %d other %d del %d", same(sh, sh_dup), same(sh, sh_dup2), same(sh, other), same(del, del_dup));
		return;
	}
	off_t o = lseek(sh_dup2, 0, SEEK_CUR);
	if (o != 1234 || lseek(other, 0, SEEK_CUR) != 99) {
		fr_status("BAD offsets %ld %ld", (long)o, (long)lseek(other, 0, SEEK_CUR));
		return;
	}
	/* Reading through one moves the offset of all three. */
	char b[10];
	if (read(sh_dup, b, sizeof(b)) != 10 || lseek(sh, 0, SEEK_CUR) != 1244 || lseek(sh_dup2, 0, SEEK_CUR) != 1244) {
		fr_status("BAD the dup'd descriptors do not share their offset");
		return;
	}
	for (int i = 0; i < 10; i++)
		if ((unsigned char)b[i] != fr_data_byte(1234 + i)) {
			fr_status("BAD shared file byte %d", 1234 + i);
			return;
		}
	lseek(sh, 1234, SEEK_SET);
	if (lseek(other, 0, SEEK_CUR) != 99) {
		fr_status("BAD the separate open moved too");
		return;
	}

	char link[64], target[4096];
	snprintf(link, sizeof(link), "/proc/self/fd/%d", del);
	ssize_t n = readlink(link, target, sizeof(target) - 1);
	target[n < 0 ? 0 : n] = 0;
	struct stat st;
	if (fstat(del, &st) || n < 10 || strcmp(target + n - 10, " (deleted)") != 0 || st.st_nlink != 0) {
		fr_status("BAD deleted file link %s nlink %ld", target, (long)st.st_nlink);
		return;
	}
	if (st.st_size != DEL_LEN || (st.st_mode & 07777) != 0640 || !S_ISREG(st.st_mode)) {
		fr_status("BAD deleted file size %ld mode %o", (long)st.st_size, st.st_mode);
		return;
	}
	if (lseek(del_dup, 0, SEEK_CUR) != 777 || (fcntl(del, F_GETFL) & O_ACCMODE) != O_RDWR) {
		fr_status("BAD deleted file offset %ld", (long)lseek(del, 0, SEEK_CUR));
		return;
	}
	unsigned char *buf = malloc(DEL_LEN);
	if (pread(del, buf, DEL_LEN, 0) != DEL_LEN) {
		fr_status("BAD deleted file short read");
		return;
	}
	for (long i = 0; i < DEL_LEN; i++)
		if (buf[i] != dpat(i)) {
			fr_status("BAD deleted file byte %ld", i);
			free(buf);
			return;
		}
	free(buf);
	int lease = fcntl(leased, F_GETLEASE);
	if (lease != F_RDLCK) {
		fr_status("BAD lease is %d", lease);
		return;
	}
	fr_status("ok pid=%d deleted=%s", (int)getpid(), target);
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	fr_write_data_file("shared", SHARED_LEN);
	sh = fr_open_in_dir("shared", O_RDWR, 0);
	lseek(sh, 1234, SEEK_SET);
	sh_dup = fcntl(sh, F_DUPFD, 41);
	sh_dup2 = dup2(sh, 42);
	other = fr_open_in_dir("shared", O_RDONLY, 0);
	lseek(other, 99, SEEK_SET);

	del = fr_open_in_dir("deleted", O_RDWR | O_CREAT | O_TRUNC, 0600);
	unsigned char *buf = malloc(DEL_LEN);
	for (long i = 0; i < DEL_LEN; i++)
		buf[i] = dpat(i);
	fr_write_all(del, (const char *)buf, DEL_LEN);
	free(buf);
	fchmod(del, 0640);
	char path[4096];
	snprintf(path, sizeof(path), "%s/deleted", fr_dir);
	if (unlink(path))
		fr_die("unlink");
	lseek(del, 777, SEEK_SET);
	del_dup = fcntl(del, F_DUPFD_CLOEXEC, 43);

	flocked = fr_open_in_dir("flocked", O_RDWR | O_CREAT, 0644);
	if (flock(flocked, LOCK_EX | LOCK_NB))
		fr_die("flock");
	posix = fr_open_in_dir("posix", O_RDWR | O_CREAT, 0644);
	struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 100, .l_len = 100};
	if (fcntl(posix, F_SETLK, &fl))
		fr_die("F_SETLK");
	fl.l_type = F_RDLCK;
	fl.l_start = 500;
	fl.l_len = 0;
	if (fcntl(posix, F_SETLK, &fl))
		fr_die("F_SETLK");
	ofd = fr_open_in_dir("ofd", O_RDWR | O_CREAT, 0644);
	struct flock ol = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 1};
	if (fcntl(ofd, F_OFD_SETLK, &ol))
		fr_die("F_OFD_SETLK");
	int lf = fr_open_in_dir("leased", O_RDWR | O_CREAT, 0644);
	close(lf);
	leased = fr_open_in_dir("leased", O_RDONLY, 0);
	if (fcntl(leased, F_SETLEASE, F_RDLCK))
		fr_die("F_SETLEASE");
	fr_ready();
	unsigned long tick = 0;
	for (;;) {
		if (fr_usr1_pending) {
			fr_usr1_pending = 0;
			check();
		}
		fr_log_tick(++tick);
		usleep(50000);
	}
}
