/* thread_attrs STATEDIR
 *
 * What each thread has of its own, set by the thread itself, all different:
 *   main "ta-main": ioprio BE/6, timer slack 123457 ns, PR_MCE_KILL_EARLY, TSC readable,
 *                   securebits KEEP_CAPS (0x10)
 *   one  "ta-one":  ioprio IDLE, timer slack 777777 ns, PR_MCE_KILL_LATE, PR_TSC_SIGSEGV,
 *                   securebits NOROOT|NOROOT_LOCKED (0x03)
 *   two  "ta-two":  none of them set (the defaults it inherited before main set its own)
 * and for the process: coredump_filter 0x7f and a MAP_NORESERVE mapping (smaps VmFlags nr)
 * holding data.
 * On SIGUSR1 the main thread asks every thread to read its own values (prctl answers only
 * for the caller), reads names and I/O priorities by TID, and compares. Reports
 * "ok checks=N" or "BAD <what differs>".
 */
#include "common.h"
#include <pthread.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#define IOPRIO_WHO_PROCESS 1
#define IOPRIO_VALUE(class, data) (((class) << 13) | (data))

struct want {
	const char *name;
	int ioprio;	   /* -1: leave */
	long slack;	   /* 0: leave */
	int mce;	   /* -1: leave */
	int tsc;	   /* 0: leave */
	int securebits;	   /* -1: leave */
	volatile pid_t tid;
	volatile int done;
	/* What the thread last read of itself. */
	volatile int seen_gen;
	long got_slack;
	int got_mce, got_tsc, got_securebits;
};

static struct want w[] = {
	{"ta-main", IOPRIO_VALUE(2, 6), 123457, PR_MCE_KILL_EARLY, PR_TSC_ENABLE, 0x10},
	{"ta-one", IOPRIO_VALUE(3, 0), 777777, PR_MCE_KILL_LATE, PR_TSC_SIGSEGV, 0x03},
	{"ta-two", -1, 0, -1, 0, -1},
};
#define N (int)(sizeof(w) / sizeof(w[0]))
static volatile int gen;
/* What thread two reads of itself before anyone changes anything: its defaults. */
static long two_slack;
static int two_mce, two_tsc, two_securebits, two_ioprio;

static void read_own(struct want *x)
{
	x->got_slack = prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0);
	x->got_mce = prctl(PR_MCE_KILL_GET, 0, 0, 0, 0);
	int tsc = 0;
	x->got_tsc = prctl(PR_GET_TSC, &tsc, 0, 0, 0) ? -1 : tsc;
	x->got_securebits = prctl(PR_GET_SECUREBITS, 0, 0, 0, 0);
}

static void apply(struct want *x)
{
	x->tid = (pid_t)syscall(SYS_gettid);
	if (prctl(PR_SET_NAME, x->name, 0, 0, 0))
		fr_die("PR_SET_NAME");
	if (x->ioprio >= 0 && syscall(SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, x->ioprio))
		fr_die("ioprio_set");
	if (x->slack && prctl(PR_SET_TIMERSLACK, x->slack, 0, 0, 0))
		fr_die("PR_SET_TIMERSLACK");
	if (x->mce >= 0 && prctl(PR_MCE_KILL, PR_MCE_KILL_SET, x->mce, 0, 0))
		fr_die("PR_MCE_KILL");
	if (x->tsc && prctl(PR_SET_TSC, x->tsc, 0, 0, 0))
		fr_die("PR_SET_TSC");
	if (x->securebits >= 0 && prctl(PR_SET_SECUREBITS, x->securebits, 0, 0, 0))
		fr_die("PR_SET_SECUREBITS");
	x->done = 1;
}

static void *thread(void *arg)
{
	struct want *x = arg;
	apply(x);
	for (;;) {
		int g = gen;
		if (x->seen_gen != g) {
			read_own(x);
			__sync_synchronize();
			x->seen_gen = g;
		}
		usleep(2000);
	}
	return NULL;
}

static unsigned char *noreserve;
#define NR_LEN (64 * 4096)

static int has_nr(void)
{
	FILE *f = fopen("/proc/self/smaps", "r");
	if (!f)
		return -1;
	char line[512];
	unsigned long start = 0, end = 0;
	int in = 0, found = 0;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%lx-%lx ", &start, &end) == 2)
			in = start == (unsigned long)noreserve;
		else if (in && strncmp(line, "VmFlags:", 8) == 0)
			found = strstr(line, " nr") != NULL ? 1 : 0;
	}
	fclose(f);
	return found;
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	sigset_t usr1;
	sigemptyset(&usr1);
	sigaddset(&usr1, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, &usr1, NULL);
	/* Thread two first, while everything is still at its default. */
	static char stacks[N][256 * 1024] __attribute__((aligned(4096)));
	for (int i = N - 1; i >= 1; i--) {
		pthread_attr_t attr;
		pthread_attr_init(&attr);
		pthread_attr_setstack(&attr, stacks[i], sizeof(stacks[i]));
		pthread_t th;
		if (pthread_create(&th, &attr, thread, &w[i]))
			fr_die("pthread_create");
		while (!w[i].done)
			usleep(1000);
		if (i == 2) {
			gen = 1;
			while (w[2].seen_gen != 1)
				usleep(1000);
			two_slack = w[2].got_slack;
			two_mce = w[2].got_mce;
			two_tsc = w[2].got_tsc;
			two_securebits = w[2].got_securebits;
			two_ioprio = (int)syscall(SYS_ioprio_get, IOPRIO_WHO_PROCESS, w[2].tid);
		}
	}
	pthread_sigmask(SIG_UNBLOCK, &usr1, NULL);
	apply(&w[0]);
	FILE *f = fopen("/proc/self/coredump_filter", "w");
	if (!f || fprintf(f, "0x7f\n") < 0 || fclose(f))
		fr_die("coredump_filter");
	noreserve = mmap(NULL, NR_LEN, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (noreserve == MAP_FAILED)
		fr_die("mmap(MAP_NORESERVE)");
	fr_fill(noreserve, NR_LEN, 77);
	uint64_t sum = fr_checksum(noreserve, NR_LEN);
	if (has_nr() != 1)
		fr_die("the MAP_NORESERVE mapping lacks nr before any dump");
	fr_ready();
	long checks = 0;
	for (unsigned long tick = 1;; tick++) {
		fr_log_tick(tick);
		usleep(20000);
		if (!fr_usr1_pending)
			continue;
		fr_usr1_pending = 0;
		char bad[200] = "";
		int g = ++gen;
		read_own(&w[0]);
		w[0].seen_gen = g;
		for (int i = 1; i < N; i++)
			for (int waited = 0; w[i].seen_gen != g; waited++) {
				if (waited > 2000) {
					snprintf(bad, sizeof(bad), "%s does not answer", w[i].name);
					break;
				}
				usleep(1000);
			}
		__sync_synchronize();
		for (int i = 0; i < N && !bad[0]; i++) {
			struct want *x = &w[i];
			char path[64], name[32] = "";
			snprintf(path, sizeof(path), "/proc/self/task/%d/comm", (int)x->tid);
			FILE *c = fopen(path, "r");
			if (!c || !fgets(name, sizeof(name), c))
				snprintf(bad, sizeof(bad), "%s: no comm", x->name);
			if (c)
				fclose(c);
			name[strcspn(name, "\n")] = 0;
			int io = (int)syscall(SYS_ioprio_get, IOPRIO_WHO_PROCESS, x->tid);
			long slack = x->slack ? x->slack : two_slack;
			int mce = x->mce >= 0 ? x->mce : two_mce;
			int tsc = x->tsc ? x->tsc : two_tsc;
			int sb = x->securebits >= 0 ? x->securebits : two_securebits;
			int wio = x->ioprio >= 0 ? x->ioprio : two_ioprio;
			if (bad[0])
				break;
			if (strcmp(name, x->name))
				snprintf(bad, sizeof(bad), "thread %s is named '%s'", x->name, name);
			else if (io != wio)
				snprintf(bad, sizeof(bad), "%s: ioprio %#x want %#x", x->name, io, wio);
			else if (x->got_slack != slack)
				snprintf(bad, sizeof(bad), "%s: timer slack %ld want %ld", x->name,
					 x->got_slack, slack);
			else if (x->got_mce != mce)
				snprintf(bad, sizeof(bad), "%s: mce kill %d want %d", x->name, x->got_mce,
					 mce);
			else if (x->got_tsc != tsc)
				snprintf(bad, sizeof(bad), "%s: tsc %d want %d", x->name, x->got_tsc, tsc);
			else if (x->got_securebits != sb)
				snprintf(bad, sizeof(bad), "%s: securebits %#x want %#x", x->name,
					 x->got_securebits, sb);
		}
		if (!bad[0]) {
			char cfs[32] = "";
			FILE *c = fopen("/proc/self/coredump_filter", "r");
			if (!c || !fgets(cfs, sizeof(cfs), c))
				snprintf(bad, sizeof(bad), "no coredump_filter");
			else if (strtoul(cfs, NULL, 16) != 0x7f)
				snprintf(bad, sizeof(bad), "coredump_filter %s", cfs);
			if (c)
				fclose(c);
		}
		if (!bad[0] && has_nr() != 1)
			snprintf(bad, sizeof(bad), "the MAP_NORESERVE mapping lacks nr");
		if (!bad[0] && fr_checksum(noreserve, NR_LEN) != sum)
			snprintf(bad, sizeof(bad), "the MAP_NORESERVE mapping's data changed");
		if (bad[0]) {
			fr_status("BAD %s", bad);
		} else {
			checks++;
			fr_status("ok checks=%ld", checks);
		}
	}
}
