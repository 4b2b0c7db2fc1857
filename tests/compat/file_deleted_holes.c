/* A sparse file deleted while open: data at 0 and at 8 MiB, a hole between (SEEK_HOLE /
 * SEEK_DATA) and few blocks allocated.
 * compat-object: deleted sparse file keeps its holes
 */
#include "common.h"

static int fd;

static void check(void)
{
	struct stat st;
	fstat(fd, &st);
	if (st.st_size != 8 * 1048576 + 4096) {
		fr_status("BAD size %lld", (long long)st.st_size);
		return;
	}
	off_t h = lseek(fd, 0, SEEK_HOLE), d = lseek(fd, 4096, SEEK_DATA);
	if (h != 4096 || d != 8 * 1048576) {
		fr_status("BAD first hole at %lld (want 4096), next data at %lld (want %d)", (long long)h,
			  (long long)d, 8 * 1048576);
		return;
	}
	if (st.st_blocks > 64) {
		fr_status("BAD %lld blocks allocated: holes filled", (long long)st.st_blocks);
		return;
	}
	char b[4];
	if (pread(fd, b, 4, 8 * 1048576) != 4 || memcmp(b, "tail", 4) || pread(fd, b, 4, 0) != 4 ||
	    memcmp(b, "head", 4)) {
		fr_status("BAD contents");
		return;
	}
	fr_status("ok blocks=%lld", (long long)st.st_blocks);
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	fd = fr_open_in_dir("sparse", O_RDWR | O_CREAT | O_TRUNC, 0644);
	char page[4096];
	memset(page, 'x', sizeof(page));
	memcpy(page, "head", 4);
	if (pwrite(fd, page, 4096, 0) != 4096)
		fr_die("write");
	memcpy(page, "tail", 4);
	if (pwrite(fd, page, 4096, 8 * 1048576) != 4096)
		fr_die("write");
	fsync(fd);
	char path[4096];
	snprintf(path, sizeof(path), "%s/sparse", fr_dir);
	unlink(path);
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
