/* Objects deleted while open, other than a plain file's bytes: what a process can see of them.
 *
 *   "sparse": a regular file with holes (data at 0..4 KiB and 1 MiB..+4 KiB, size 3 MiB),
 *     mode 0604, owner 1234:5678, atime and mtime set to fixed times, offset 5000; unlinked.
 *   "fifo": a FIFO with 10 bytes queued, mode 0620, held by three descriptions (read-write,
 *     write-only, read-only); unlinked.
 *   "zero": a character device node of /dev/zero (1:5), mode 0640; unlinked.
 *   "dir": a directory, mode 0750, opened then removed.
 * With the argument "file", only "sparse".
 * SIGUSR1 checks each with fstat (type, mode, owner, times, size, blocks, links), the holes
 * with SEEK_HOLE/SEEK_DATA, the bytes, the FIFO's queue (read and put back) and that its
 * three descriptions share one FIFO, and that the device reads zeros.
 */
#include "common.h"
#include <sys/ioctl.h>
#include <sys/sysmacros.h>

#define MIB (1024L * 1024)
#define ATIME 1000000000L
#define ATIME_NS 123456789L
#define MTIME 1200000000L
#define MTIME_NS 987654321L

static int sp, fa, fw, fr, zero, dir;
static int only_file; /* argument "file": the regular file alone */

static unsigned char pat(long i) { return (unsigned char)((i * 7 + 3) & 0xff); }

static int bad_stat(int fd, const char *what, mode_t type, mode_t mode, uid_t uid, gid_t gid, struct stat *st)
{
	if (fstat(fd, st)) {
		fr_status("BAD %s: fstat: %s", what, strerror(errno));
		return 1;
	}
	if ((st->st_mode & S_IFMT) != type || (st->st_mode & 07777) != mode || st->st_uid != uid ||
	    st->st_gid != gid || st->st_nlink != 0) {
		fr_status("BAD %s: mode %o owner %d:%d links %ld", what, st->st_mode, (int)st->st_uid, (int)st->st_gid,
			  (long)st->st_nlink);
		return 1;
	}
	return 0;
}

static void check(void)
{
	struct stat st;
	if (bad_stat(sp, "sparse", S_IFREG, 0604, 1234, 5678, &st))
		return;
	if (st.st_size != 3 * MIB || st.st_atim.tv_sec != ATIME || st.st_atim.tv_nsec != ATIME_NS ||
	    st.st_mtim.tv_sec != MTIME || st.st_mtim.tv_nsec != MTIME_NS) {
		fr_status("BAD sparse: size %ld atime %ld.%09ld mtime %ld.%09ld", (long)st.st_size, (long)st.st_atim.tv_sec,
			  st.st_atim.tv_nsec, (long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
		return;
	}
	off_t pos = lseek(sp, 0, SEEK_CUR);
	if (pos != 5000) {
		fr_status("BAD sparse: offset %ld", (long)pos);
		return;
	}
	off_t hole = lseek(sp, 0, SEEK_HOLE), data = lseek(sp, hole, SEEK_DATA);
	off_t hole2 = lseek(sp, data, SEEK_HOLE), end = lseek(sp, hole2, SEEK_DATA);
	/* Filled holes show as data and take blocks. */
	if (hole != 4096 || data != MIB || hole2 != MIB + 4096 || end != -1 || st.st_blocks > 64) {
		fr_status("BAD sparse: holes at %ld, data at %ld, hole at %ld, then %ld; %ld blocks", (long)hole, (long)data,
			  (long)hole2, (long)end, (long)st.st_blocks);
		return;
	}
	lseek(sp, pos, SEEK_SET); /* SEEK_HOLE and SEEK_DATA moved it */
	unsigned char b[4096];
	for (int part = 0; part < 2; part++) {
		off_t at = part ? MIB : 0;
		if (pread(sp, b, sizeof(b), at) != sizeof(b)) {
			fr_status("BAD sparse: short read at %ld", (long)at);
			return;
		}
		for (int i = 0; i < 4096; i++)
			if (b[i] != pat(at + i)) {
				fr_status("BAD sparse: byte %ld", (long)at + i);
				return;
			}
	}
	if (lseek(sp, 0, SEEK_CUR) != 5000) {
		fr_status("BAD sparse: offset %ld", (long)lseek(sp, 0, SEEK_CUR));
		return;
	}
	/* Reading moved the access time (relatime): set it back for the next check. */
	struct timespec ts[2] = {{ATIME, ATIME_NS}, {MTIME, MTIME_NS}};
	futimens(sp, ts);

	if (only_file) {
		fr_status("ok pid=%d", (int)getpid());
		return;
	}
	struct stat a, w, r;
	if (bad_stat(fa, "fifo", S_IFIFO, 0620, 0, 0, &a) || bad_stat(fw, "fifo (write end)", S_IFIFO, 0620, 0, 0, &w) ||
	    bad_stat(fr, "fifo (read end)", S_IFIFO, 0620, 0, 0, &r))
		return;
	if (a.st_ino != w.st_ino || a.st_ino != r.st_ino || a.st_dev != r.st_dev) {
		fr_status("BAD fifo: its descriptions are on different FIFOs (%lu %lu %lu)", (unsigned long)a.st_ino,
			  (unsigned long)w.st_ino, (unsigned long)r.st_ino);
		return;
	}
	if ((fcntl(fa, F_GETFL) & O_ACCMODE) != O_RDWR || (fcntl(fw, F_GETFL) & O_ACCMODE) != O_WRONLY ||
	    (fcntl(fr, F_GETFL) & O_ACCMODE) != O_RDONLY) {
		fr_status("BAD fifo: access modes");
		return;
	}
	int queued = -1;
	char q[32] = {0};
	if (ioctl(fr, FIONREAD, &queued) || queued != 10 || read(fr, q, sizeof(q)) != 10 || memcmp(q, "fifo bytes", 10)) {
		fr_status("BAD fifo: %d bytes queued: %.10s", queued, q);
		return;
	}
	if (write(fw, q, 10) != 10) {
		fr_status("BAD fifo: write back: %s", strerror(errno));
		return;
	}

	if (bad_stat(zero, "device", S_IFCHR, 0640, 0, 0, &st))
		return;
	memset(b, 1, 64);
	if (st.st_rdev != makedev(1, 5) || read(zero, b, 64) != 64 || b[0] || b[63]) {
		fr_status("BAD device: rdev %d:%d or not zeros", major(st.st_rdev), minor(st.st_rdev));
		return;
	}

	if (bad_stat(dir, "dir", S_IFDIR, 0750, 0, 0, &st))
		return;
	fr_status("ok pid=%d", (int)getpid());
}

static void path_of(char *out, size_t n, const char *name) { snprintf(out, n, "%s/%s", fr_dir, name); }

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	char p[4096];

	sp = fr_open_in_dir("sparse", O_RDWR | O_CREAT | O_TRUNC, 0600);
	unsigned char b[4096];
	for (int part = 0; part < 2; part++) {
		off_t at = part ? MIB : 0;
		for (int i = 0; i < 4096; i++)
			b[i] = pat(at + i);
		if (pwrite(sp, b, sizeof(b), at) != sizeof(b))
			fr_die("pwrite");
	}
	if (ftruncate(sp, 3 * MIB) || fchown(sp, 1234, 5678) || fchmod(sp, 0604))
		fr_die("sparse");
	struct timespec ts[2] = {{ATIME, ATIME_NS}, {MTIME, MTIME_NS}};
	if (futimens(sp, ts))
		fr_die("futimens");
	lseek(sp, 5000, SEEK_SET);
	path_of(p, sizeof(p), "sparse");
	if (unlink(p))
		fr_die("unlink sparse");

	only_file = argc > 2 && strcmp(argv[2], "file") == 0;
	if (only_file)
		goto ready;
	path_of(p, sizeof(p), "fifo");
	if (mkfifo(p, 0600) || chmod(p, 0620))
		fr_die("mkfifo");
	fa = open(p, O_RDWR | O_NONBLOCK);
	fw = open(p, O_WRONLY);
	fr = open(p, O_RDONLY | O_NONBLOCK);
	if (fa < 0 || fw < 0 || fr < 0 || write(fw, "fifo bytes", 10) != 10)
		fr_die("fifo");
	if (unlink(p))
		fr_die("unlink fifo");

	path_of(p, sizeof(p), "zero");
	if (mknod(p, S_IFCHR | 0600, makedev(1, 5)) || chmod(p, 0640))
		fr_die("mknod");
	zero = open(p, O_RDWR);
	if (zero < 0 || unlink(p))
		fr_die("zero");

	path_of(p, sizeof(p), "dir");
	if (mkdir(p, 0700) || chmod(p, 0750))
		fr_die("mkdir");
	dir = open(p, O_RDONLY | O_DIRECTORY);
	if (dir < 0 || rmdir(p))
		fr_die("dir");

ready:
	fr_ready();
	for (unsigned long tick = 0;; tick++) {
		if (fr_usr1_pending) {
			fr_usr1_pending = 0;
			check();
		}
		fr_log_tick(tick);
		usleep(10000);
	}
}
