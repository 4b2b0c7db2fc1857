/* A root other than / (chroot into a directory of the state dir): "/" is that directory, a
 * file in it is found at "/marker", and the working directory (a directory inside the root)
 * reads "/sub" from getcwd.
 * compat-object: chroot (root directory other than /)
 */
#include "common.h"

static ino_t want;

static void check(void)
{
	struct stat st;
	if (stat("/", &st) || st.st_ino != want) {
		fr_status("BAD / is another directory (ino %lu want %lu)", (unsigned long)st.st_ino,
			  (unsigned long)want);
		return;
	}
	int f = open("/marker", O_RDONLY);
	char b[6] = "";
	if (f < 0 || read(f, b, 6) != 6 || memcmp(b, "marker", 6)) {
		fr_status("BAD /marker not found in the root");
		if (f >= 0)
			close(f);
		return;
	}
	close(f);
	char cwd[256];
	if (!getcwd(cwd, sizeof(cwd)) || strcmp(cwd, "/sub")) {
		fr_status("BAD getcwd is not /sub");
		return;
	}
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	char p[4096];
	snprintf(p, sizeof(p), "%s/root", fr_dir);
	mkdir(p, 0755);
	int f = fr_open_in_dir("root/marker", O_WRONLY | O_CREAT, 0644);
	if (write(f, "marker", 6) != 6)
		fr_die("write");
	close(f);
	struct stat st;
	stat(p, &st);
	want = st.st_ino;
	char sub[4200];
	snprintf(sub, sizeof(sub), "%s/sub", p);
	mkdir(sub, 0755);
	if (chroot(p) || chdir("/sub"))
		fr_die("chroot");
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
