/* A regular file deleted while open: holes, times, mode, owner, offset, contents.
 * compat-object: regular file deleted while open (holes, atime/mtime, mode, owner)
 */
#include "common.h"

#define MIB (1024L * 1024)
static int fd;
static const struct timespec ts[2] = {{1000000000L, 111}, {1100000000L, 222}};

static void check(void)
{
	struct stat st;
	off_t pos = lseek(fd, 0, SEEK_CUR);
	if (fstat(fd, &st) || st.st_nlink != 0 || (st.st_mode & 07777) != 0641 || st.st_uid != 4321 ||
	    st.st_gid != 8765 || st.st_size != 2 * MIB || pos != 77) {
		fr_status("BAD stat: mode %o owner %d:%d size %ld pos %ld", st.st_mode, (int)st.st_uid, (int)st.st_gid,
			  (long)st.st_size, (long)pos);
		return;
	}
	if (st.st_atim.tv_sec != ts[0].tv_sec || st.st_atim.tv_nsec != ts[0].tv_nsec || st.st_mtim.tv_sec != ts[1].tv_sec ||
	    st.st_mtim.tv_nsec != ts[1].tv_nsec) {
		fr_status("BAD times: atime %ld.%ld mtime %ld.%ld", (long)st.st_atim.tv_sec, st.st_atim.tv_nsec,
			  (long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
		return;
	}
	off_t hole = lseek(fd, 0, SEEK_HOLE), data = lseek(fd, 0, SEEK_DATA);
	off_t data2 = lseek(fd, hole, SEEK_DATA);
	lseek(fd, pos, SEEK_SET);
	if (data != 0 || hole != 4096 || data2 != MIB) {
		fr_status("BAD holes: data %ld hole %ld data %ld", (long)data, (long)hole, (long)data2);
		return;
	}
	char b[8] = {0};
	if (pread(fd, b, 5, 0) != 5 || memcmp(b, "start", 5) || pread(fd, b, 3, MIB) != 3 || memcmp(b, "mid", 3)) {
		fr_status("BAD contents");
		return;
	}
	futimens(fd, ts); /* the reads moved the atime */
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	fd = fr_open_in_dir("f", O_RDWR | O_CREAT | O_TRUNC, 0600);
	char p[4096];
	snprintf(p, sizeof(p), "%s/f", fr_dir);
	if (pwrite(fd, "start", 5, 0) != 5 || pwrite(fd, "mid", 3, MIB) != 3 || ftruncate(fd, 2 * MIB) ||
	    fchown(fd, 4321, 8765) || fchmod(fd, 0641) || futimens(fd, ts) || unlink(p))
		fr_die("setup");
	lseek(fd, 77, SEEK_SET);
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
