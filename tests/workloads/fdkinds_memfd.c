/* memfd, as descriptors and as mappings:
 * compat-object: memfd descriptors and mappings
 *   shared   "ferry shared": 1 MiB with data at 0..8 KiB and at 512 KiB (the rest a hole),
 *            seals F_SEAL_SHRINK | F_SEAL_GROW, fd offset 1234, mapped MAP_SHARED read-write
 *   sealed   "ferry sealed": "constant" + zeros, seals F_SEAL_WRITE | F_SEAL_SEAL, mapped
 *            MAP_SHARED read-only, its descriptor closed (known only through the mapping)
 *   private  "ferry private": two pages mapped MAP_PRIVATE, page 0 written (a private copy),
 *            its descriptor closed
 * Each check verifies contents, seals, sizes, names and offsets, then writes through the shared
 * mapping and reads back with pread (and the other way round) at an offset that moves with
 * each check, so that the mapping and the descriptor must be one file:
 *   ok checks=N seals=S sealed_seals=T size=Z
 */
#include "common.h"

#include <sys/mman.h>

#define SIZE (1 << 20)
#define PAGE 4096

static int shared_fd;
static unsigned char *shared_map;
static const unsigned char *sealed_map;
static unsigned char *private_map;
static int checks;
static off_t want_pos = 1234;

static int memfd(const char *name, unsigned flags)
{
	int fd = memfd_create(name, flags);
	if (fd < 0)
		fr_die("memfd_create");
	return fd;
}

static unsigned char pattern(long i)
{
	return (unsigned char)(i * 13 + 1);
}

static void check(void)
{
	char bad[256] = "";
	struct stat st;
	int seals = fcntl(shared_fd, F_GET_SEALS);
	fstat(shared_fd, &st);
	if (seals != (F_SEAL_SHRINK | F_SEAL_GROW) || st.st_size != SIZE)
		snprintf(bad, sizeof(bad), "shared seals %x size %lld", seals, (long long)st.st_size);
	char link[256] = "", path[64];
	snprintf(path, sizeof(path), "/proc/self/fd/%d", shared_fd);
	ssize_t ln = readlink(path, link, sizeof(link) - 1);
	if (!bad[0] && (ln < 0 || strcmp(link, "/memfd:ferry shared (deleted)")))
		snprintf(bad, sizeof(bad), "shared link %.200s", link);
	off_t pos = lseek(shared_fd, 0, SEEK_CUR);
	if (!bad[0] && pos != want_pos)
		snprintf(bad, sizeof(bad), "offset %lld, want %lld", (long long)pos, (long long)want_pos);
	/* Contents: the pattern where data was written, zeros in the hole. */
	static unsigned char buf[SIZE];
	if (!bad[0] && pread(shared_fd, buf, SIZE, 0) != SIZE)
		snprintf(bad, sizeof(bad), "pread: %s", strerror(errno));
	for (long i = 0; !bad[0] && i < SIZE; i++) {
		unsigned char want = 0;
		if (i < 2 * PAGE || (i >= 512 * 1024 && i < 512 * 1024 + 100))
			want = pattern(i);
		if (i >= 4 * PAGE && i < 4 * PAGE + checks)
			want = (unsigned char)(i - 4 * PAGE + 1); /* written through the mapping */
		if (i >= 6 * PAGE && i < 6 * PAGE + checks)
			want = (unsigned char)(i - 6 * PAGE + 101); /* written with pwrite */
		if (buf[i] != want || shared_map[i] != want)
			snprintf(bad, sizeof(bad), "shared byte %ld: fd %u, map %u, want %u", i, buf[i],
				 shared_map[i], want);
	}
	/* The mapping and the descriptor are one file. */
	shared_map[4 * PAGE + checks] = (unsigned char)(checks + 1);
	unsigned char b = 0;
	if (!bad[0] && (pread(shared_fd, &b, 1, 4 * PAGE + checks) != 1 || b != checks + 1))
		snprintf(bad, sizeof(bad), "write through the mapping not seen by pread: %u", b);
	b = (unsigned char)(checks + 101);
	if (pwrite(shared_fd, &b, 1, 6 * PAGE + checks) != 1)
		fr_die("pwrite");
	if (!bad[0] && shared_map[6 * PAGE + checks] != b)
		snprintf(bad, sizeof(bad), "pwrite not seen through the mapping");
	checks++;
	/* The sealed memfd, reached through its mapping. */
	if (!bad[0] && (memcmp(sealed_map, "constant", 9) || sealed_map[PAGE + 5] != 0))
		snprintf(bad, sizeof(bad), "sealed contents");
	char mf[128];
	snprintf(mf, sizeof(mf), "/proc/self/map_files/%lx-%lx", (unsigned long)sealed_map,
		 (unsigned long)sealed_map + 2 * PAGE);
	int sfd = open(mf, O_RDONLY);
	int sseals = sfd < 0 ? -1 : fcntl(sfd, F_GET_SEALS);
	if (!bad[0] && sseals != (F_SEAL_WRITE | F_SEAL_SEAL))
		snprintf(bad, sizeof(bad), "sealed seals %x (%s)", sseals, strerror(errno));
	if (!bad[0] && sfd >= 0 && pwrite(sfd, "x", 1, 0) != -1)
		snprintf(bad, sizeof(bad), "sealed memfd is writable");
	if (sfd >= 0)
		close(sfd);
	/* The private mapping: our copy of page 0, the file's page 1. */
	if (!bad[0] && (strcmp((char *)private_map, "private copy") ||
			strcmp((char *)private_map + PAGE, "file page")))
		snprintf(bad, sizeof(bad), "private mapping: %.16s / %.16s", private_map,
			 private_map + PAGE);
	if (bad[0])
		fr_status("BAD %s", bad);
	else
		fr_status("ok checks=%d seals=%x sealed_seals=%x size=%lld", checks, seals, sseals,
			  (long long)st.st_size);
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	static unsigned char data[2 * PAGE];
	for (long i = 0; i < 2 * PAGE; i++)
		data[i] = pattern(i);
	shared_fd = memfd("ferry shared", MFD_ALLOW_SEALING);
	if (ftruncate(shared_fd, SIZE) || pwrite(shared_fd, data, sizeof(data), 0) != sizeof(data))
		fr_die("fill shared");
	unsigned char tail[100];
	for (int i = 0; i < 100; i++)
		tail[i] = pattern(512 * 1024 + i);
	if (pwrite(shared_fd, tail, 100, 512 * 1024) != 100)
		fr_die("fill shared tail");
	if (fcntl(shared_fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW))
		fr_die("seal shared");
	lseek(shared_fd, want_pos, SEEK_SET);
	shared_map = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, shared_fd, 0);

	int sealed = memfd("ferry sealed", MFD_ALLOW_SEALING);
	if (ftruncate(sealed, 2 * PAGE) || pwrite(sealed, "constant", 9, 0) != 9)
		fr_die("fill sealed");
	if (fcntl(sealed, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_SEAL))
		fr_die("seal sealed");
	sealed_map = mmap(NULL, 2 * PAGE, PROT_READ, MAP_SHARED, sealed, 0);
	close(sealed);

	int priv = memfd("ferry private", 0);
	if (ftruncate(priv, 2 * PAGE) || pwrite(priv, "file page", 10, 0) != 10 ||
	    pwrite(priv, "file page", 10, PAGE) != 10)
		fr_die("fill private");
	private_map = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, priv, 0);
	close(priv);
	if (shared_map == MAP_FAILED || sealed_map == MAP_FAILED || private_map == MAP_FAILED)
		fr_die("mmap");
	strcpy((char *)private_map, "private copy");

	fr_status("fds shared=%d", shared_fd);
	fr_ready();
	for (unsigned long n = 1;; n++) {
		if (fr_usr1_pending) {
			fr_usr1_pending = 0;
			check();
		}
		fr_log_tick(n);
		usleep(20000);
	}
}
