/* eventfd: three counters that must read back exactly after a restore.
 * compat-object: eventfd counters (plain, semaphore, 64-bit)
 *   plain     count 5, blocking, inherited across exec
 *   sem       EFD_SEMAPHORE | EFD_NONBLOCK, count 3: each read takes 1
 *   big       EFD_NONBLOCK | EFD_CLOEXEC, a count above 32 bits
 * Each check reads every counter empty, compares with the model kept in memory, then writes
 * new values (so the next check, maybe after a restore, expects those):
 *   ok checks=N plain=V sem=K big=B
 */
#include "common.h"

#include <sys/eventfd.h>

static int plain, sem, big;
static uint64_t want_plain = 5, want_sem = 3, want_big = (1ull << 40) + 7;
static int checks;

static void put(int fd, uint64_t v)
{
	if (write(fd, &v, 8) != 8)
		fr_die("eventfd write");
}

static void check(void)
{
	char bad[256] = "";
	uint64_t v = 0;
	int fl_plain = fcntl(plain, F_GETFL), fl_sem = fcntl(sem, F_GETFL), fd_big = fcntl(big, F_GETFD);
	if ((fl_plain & O_NONBLOCK) || !(fl_sem & O_NONBLOCK) || !(fd_big & FD_CLOEXEC))
		snprintf(bad, sizeof(bad), "flags plain=%o sem=%o big-fd=%o", fl_plain, fl_sem, fd_big);
	if (!bad[0] && (read(plain, &v, 8) != 8 || v != want_plain))
		snprintf(bad, sizeof(bad), "plain read %llu, want %llu", (unsigned long long)v,
			 (unsigned long long)want_plain);
	uint64_t got_sem = 0;
	while (!bad[0] && read(sem, &v, 8) == 8) {
		if (v != 1)
			snprintf(bad, sizeof(bad), "semaphore read %llu, not 1", (unsigned long long)v);
		got_sem++;
	}
	if (!bad[0] && errno != EAGAIN)
		snprintf(bad, sizeof(bad), "semaphore read: %s", strerror(errno));
	if (!bad[0] && got_sem != want_sem)
		snprintf(bad, sizeof(bad), "semaphore gave %llu, want %llu", (unsigned long long)got_sem,
			 (unsigned long long)want_sem);
	if (!bad[0] && (read(big, &v, 8) != 8 || v != want_big))
		snprintf(bad, sizeof(bad), "big read %llu, want %llu", (unsigned long long)v,
			 (unsigned long long)want_big);
	if (!bad[0] && read(big, &v, 8) != -1)
		snprintf(bad, sizeof(bad), "big was not empty after a read");
	checks++;
	want_plain += 2;
	want_sem += 1;
	want_big += 3;
	put(plain, want_plain);
	put(sem, want_sem);
	put(big, want_big);
	if (bad[0])
		fr_status("BAD %s", bad);
	else
		fr_status("ok checks=%d plain=%llu sem=%llu big=%llu", checks, (unsigned long long)want_plain,
			  (unsigned long long)want_sem, (unsigned long long)want_big);
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	plain = eventfd(5, 0);
	sem = eventfd(0, EFD_SEMAPHORE | EFD_NONBLOCK);
	big = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (plain < 0 || sem < 0 || big < 0)
		fr_die("eventfd");
	put(sem, want_sem);
	put(big, want_big);
	fr_status("fds plain=%d sem=%d big=%d", plain, sem, big);
	fr_ready();
	for (unsigned long tick = 1;; tick++) {
		if (fr_usr1_pending) {
			fr_usr1_pending = 0;
			check();
		}
		fr_log_tick(tick);
		usleep(20000);
	}
}
