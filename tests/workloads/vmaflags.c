/* Memory-area flags that must survive a restore, on sub-ranges of one mapping (so that its VMA
 * is split by them and must come back split the same way) and on a file mapping:
 *   mlock, mlock2(MLOCK_ONFAULT), MADV_DONTFORK, MADV_DONTDUMP, MADV_WIPEONFORK,
 *   MADV_HUGEPAGE, MADV_NOHUGEPAGE, MADV_MERGEABLE, MADV_SEQUENTIAL, MADV_RANDOM,
 * and the process-wide ones: mlockall(MCL_FUTURE) and prctl(PR_SET_THP_DISABLE).
 * argv[2]: "future"  mlockall(MCL_FUTURE), THP disabled completely;
 *          "all"     mlockall(MCL_CURRENT|MCL_FUTURE|MCL_ONFAULT) first (every area locked on
 *                    fault), THP disabled except where advised, KSM merging every area.
 * SIGUSR1 checks, with its own /proc/self/smaps, status and prctl, and by behaviour (a forked
 * child sees the WIPEONFORK pages zero and no DONTFORK pages; a fresh mapping is locked):
 * "ok pid=P checks=K vmlck=N" or "BAD what". */
#include "common.h"

#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#define PS 4096ul
#define NAREA 16
#ifndef MLOCK_ONFAULT
#define MLOCK_ONFAULT 1
#endif
#ifndef PR_SET_MEMORY_MERGE
#define PR_SET_MEMORY_MERGE 67
#define PR_GET_MEMORY_MERGE 68
#endif
#ifndef PR_THP_DISABLE_EXCEPT_ADVISED
#define PR_THP_DISABLE_EXCEPT_ADVISED (1 << 1)
#endif

static unsigned char *area, *file_map, *combo;
static int all_mode;
static long thp_want, merge_want;
static unsigned long checks;

/* One range and the VmFlags it must have (and, with all_mode, "lo lf" unless said). */
struct range {
	unsigned char *start;
	unsigned long pages;
	const char *want;
	const char *absent;
	char seen[256]; /* VmFlags before the checkpoint */
};
static struct range ranges[12];
static int nranges;

static char smaps[1 << 20];

static void read_file(const char *path, char *buf, size_t cap)
{
	int fd = open(path, O_RDONLY);
	size_t n = 0;
	if (fd >= 0) {
		ssize_t r;
		while (n < cap - 1 && (r = read(fd, buf + n, cap - 1 - n)) > 0)
			n += (size_t)r;
		close(fd);
	}
	buf[n] = 0;
}

/* VmFlags of the VMA that is exactly [s, e) into out; 0 when no VMA has these bounds. */
static int vmflags_of(unsigned long s, unsigned long e, char *out, size_t cap)
{
	read_file("/proc/self/smaps", smaps, sizeof(smaps));
	int in = 0;
	for (char *line = smaps; line && *line;) {
		char *next = strchr(line, '\n');
		if (next)
			*next++ = 0;
		unsigned long a, b;
		char *sp = strchr(line, ' ');
		if (sp && !memchr(line, ':', (size_t)(sp - line)) &&
		    sscanf(line, "%lx-%lx ", &a, &b) == 2)
			in = a == s && b == e;
		else if (in && !strncmp(line, "VmFlags:", 8)) {
			snprintf(out, cap, "%s ", line + 8);
			return 1;
		}
		line = next;
	}
	return 0;
}

static int has_flag(const char *flags, const char *f)
{
	char pat[8];
	snprintf(pat, sizeof(pat), " %s ", f);
	return strstr(flags, pat) != NULL;
}

static long vmlck_kb(void)
{
	static char buf[8192];
	read_file("/proc/self/status", buf, sizeof(buf));
	char *p = strstr(buf, "VmLck:");
	return p ? strtol(p + 6, NULL, 10) : -1;
}

static void add(unsigned char *start, unsigned long pages, const char *want, const char *absent)
{
	struct range *r = &ranges[nranges++];
	r->start = start;
	r->pages = pages;
	r->want = want;
	r->absent = absent;
}

static unsigned char pattern(unsigned long i)
{
	return (unsigned char)(i * 13 + i / PS + 1);
}

static const char *check(int first)
{
	static char why[512];
	char flags[256];
	for (int i = 0; i < nranges; i++) {
		struct range *r = &ranges[i];
		unsigned long s = (unsigned long)r->start, e = s + r->pages * PS;
		if (!vmflags_of(s, e, flags, sizeof(flags))) {
			snprintf(why, sizeof(why), "no VMA is exactly %lx-%lx (%s)", s, e, r->want);
			return why;
		}
		char want[64], *save = NULL;
		snprintf(want, sizeof(want), "%s", r->want);
		for (char *f = strtok_r(want, " ", &save); f; f = strtok_r(NULL, " ", &save))
			if (!has_flag(flags, f)) {
				snprintf(why, sizeof(why), "%lx-%lx lacks %s:%s", s, e, f, flags);
				return why;
			}
		snprintf(want, sizeof(want), "%s", r->absent);
		for (char *f = strtok_r(want, " ", &save); f; f = strtok_r(NULL, " ", &save))
			if (has_flag(flags, f)) {
				snprintf(why, sizeof(why), "%lx-%lx has %s:%s", s, e, f, flags);
				return why;
			}
		if (first)
			snprintf(r->seen, sizeof(r->seen), "%s", flags);
		else if (strcmp(flags, r->seen)) {
			snprintf(why, sizeof(why), "%lx-%lx VmFlags were%s now%s", s, e, r->seen,
				 flags);
			return why;
		}
	}
	for (unsigned long i = 0; i < NAREA * PS; i++)
		if (area[i] != pattern(i)) {
			snprintf(why, sizeof(why), "area byte %lu", i);
			return why;
		}
	/* Locked (not on fault) pages are resident. */
	unsigned char vec[2];
	if (mincore(area, 2 * PS, vec) || !(vec[0] & vec[1] & 1))
		return "mlocked pages are not resident";
	long thp = prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0);
	if (thp != thp_want) {
		snprintf(why, sizeof(why), "PR_GET_THP_DISABLE %ld, want %ld", thp, thp_want);
		return why;
	}
	long merge = prctl(PR_GET_MEMORY_MERGE, 0, 0, 0, 0);
	if (merge != merge_want) {
		snprintf(why, sizeof(why), "PR_GET_MEMORY_MERGE %ld, want %ld", merge, merge_want);
		return why;
	}
	/* mlockall(MCL_FUTURE): a new mapping is locked (on fault only in all_mode). */
	long before = vmlck_kb();
	unsigned char *fresh =
		mmap(NULL, 2 * PS, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (fresh == MAP_FAILED)
		return "mmap of a fresh area";
	/* A guard page apart from any neighbour it could merge with is not needed: VmLck counts. */
	long after = vmlck_kb();
	int resident = !mincore(fresh, 2 * PS, vec) && (vec[0] & 1);
	munmap(fresh, 2 * PS);
	if (after != before + 8) {
		snprintf(why, sizeof(why), "a new mapping is not locked (VmLck %ld then %ld kB)",
			 before, after);
		return why;
	}
	if (resident == all_mode)
		return all_mode ? "a new mapping is populated despite MCL_ONFAULT"
				: "a new mapping is not populated by MCL_FUTURE";
	/* Behaviour across fork. */
	pid_t child = fork();
	if (child < 0)
		return "fork";
	if (child == 0) {
		int bad = 0;
		/* DONTFORK: pages 4-5 are not mapped in the child. */
		if (mincore(area + 4 * PS, 2 * PS, vec) != -1 || errno != ENOMEM)
			bad |= 1;
		/* WIPEONFORK: pages 8-9 read zero. */
		for (unsigned long i = 8 * PS; i < 10 * PS; i++)
			if (area[i])
				bad |= 2;
		/* The combined area was DONTFORK too. */
		if (mincore(combo, PS, vec) != -1 || errno != ENOMEM)
			bad |= 4;
		/* Others are copied. */
		if (area[12 * PS] != pattern(12 * PS))
			bad |= 8;
		_exit(bad);
	}
	int st;
	if (waitpid(child, &st, 0) != child || !WIFEXITED(st))
		return "child did not exit";
	if (WEXITSTATUS(st)) {
		snprintf(why, sizeof(why), "forked child: %s%s%s%s",
			 WEXITSTATUS(st) & 1 ? "DONTFORK pages present " : "",
			 WEXITSTATUS(st) & 2 ? "WIPEONFORK pages not zero " : "",
			 WEXITSTATUS(st) & 4 ? "DONTFORK area present " : "",
			 WEXITSTATUS(st) & 8 ? "copied pages wrong" : "");
		return why;
	}
	return NULL;
}

static void must(int r, const char *what)
{
	if (r)
		fr_die(what);
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	all_mode = argc > 2 && !strcmp(argv[2], "all");

	if (all_mode) {
		must(mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT), "mlockall");
		if (prctl(PR_SET_THP_DISABLE, 1, PR_THP_DISABLE_EXCEPT_ADVISED, 0, 0) == 0)
			thp_want = 1 | PR_THP_DISABLE_EXCEPT_ADVISED;
		else
			must(prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0), "PR_SET_THP_DISABLE"), thp_want = 1;
		must(prctl(PR_SET_MEMORY_MERGE, 1, 0, 0, 0), "PR_SET_MEMORY_MERGE");
		merge_want = 1;
	} else {
		must(prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0), "PR_SET_THP_DISABLE");
		thp_want = 1;
	}

	/* Guard pages around the area keep its first and last VMA from merging with others. */
	unsigned char *res = mmap(NULL, (NAREA + 2) * PS, PROT_NONE,
				  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (res == MAP_FAILED)
		fr_die("mmap");
	area = mmap(res + PS, NAREA * PS, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
	if (area == MAP_FAILED)
		fr_die("mmap area");
	for (unsigned long i = 0; i < NAREA * PS; i++)
		area[i] = pattern(i);
	must(mlock(area, 2 * PS), "mlock");
	must(mlock2(area + 2 * PS, 2 * PS, MLOCK_ONFAULT), "mlock2");
	must(madvise(area + 4 * PS, 2 * PS, MADV_DONTFORK), "MADV_DONTFORK");
	must(madvise(area + 6 * PS, 2 * PS, MADV_DONTDUMP), "MADV_DONTDUMP");
	must(madvise(area + 8 * PS, 2 * PS, MADV_WIPEONFORK), "MADV_WIPEONFORK");
	must(madvise(area + 10 * PS, 2 * PS, MADV_HUGEPAGE), "MADV_HUGEPAGE");
	must(madvise(area + 12 * PS, 2 * PS, MADV_NOHUGEPAGE), "MADV_NOHUGEPAGE");
	if (!all_mode)
		must(madvise(area + 14 * PS, 2 * PS, MADV_MERGEABLE), "MADV_MERGEABLE");
	else
		/* Every area merges: this one is taken out of it. */
		must(madvise(area + 14 * PS, 2 * PS, MADV_UNMERGEABLE), "MADV_UNMERGEABLE");
	add(area, 2, "lo", "lf dc dd wf hg nh");
	add(area + 2 * PS, 2, "lo lf", "dc dd wf");
	add(area + 4 * PS, 2, all_mode ? "dc lo lf" : "dc", "dd wf hg");
	add(area + 6 * PS, 2, all_mode ? "dd lo lf" : "dd", "dc wf hg");
	add(area + 8 * PS, 2, all_mode ? "wf lo lf" : "wf", "dc dd hg");
	add(area + 10 * PS, 2, all_mode ? "hg lo lf mg" : "hg", "nh dc");
	add(area + 12 * PS, 2, all_mode ? "nh lo lf mg" : "nh", "hg dc");
	add(area + 14 * PS, 2, all_mode ? "lo lf" : "mg", all_mode ? "mg hg" : "lo hg");

	/* Several flags on one area. */
	combo = mmap(NULL, 4 * PS, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (combo == MAP_FAILED)
		fr_die("mmap combo");
	memset(combo, 'C', 4 * PS);
	must(madvise(combo, 4 * PS, MADV_DONTFORK), "MADV_DONTFORK");
	must(madvise(combo, 4 * PS, MADV_DONTDUMP), "MADV_DONTDUMP");
	must(madvise(combo, 4 * PS, MADV_NOHUGEPAGE), "MADV_NOHUGEPAGE");
	must(mlock(combo, 4 * PS), "mlock");
	add(combo, 4, "dc dd nh lo", "lf wf");

	/* A file read sequentially in one half, randomly in the other. */
	fr_write_data_file("data", 8 * PS);
	char path[4096];
	snprintf(path, sizeof(path), "%s/data", fr_dir);
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		fr_die("open data");
	file_map = mmap(NULL, 8 * PS, PROT_READ, MAP_PRIVATE, fd, 0);
	if (file_map == MAP_FAILED)
		fr_die("mmap data");
	close(fd);
	must(madvise(file_map, 4 * PS, MADV_SEQUENTIAL), "MADV_SEQUENTIAL");
	must(madvise(file_map + 4 * PS, 4 * PS, MADV_RANDOM), "MADV_RANDOM");
	add(file_map, 4, "sr", "rr");
	add(file_map + 4 * PS, 4, "rr", "sr");

	/* Only the mappings made from now on are locked. */
	if (!all_mode)
		must(mlockall(MCL_FUTURE), "mlockall");

	const char *why = check(1);
	if (why) {
		fr_status("BAD before checkpoint: %s", why);
		for (;;)
			pause();
	}
	checks++;
	fr_ready();
	unsigned long counter = 0;
	for (;;) {
		if (fr_usr1_pending) {
			fr_usr1_pending = 0;
			why = check(0);
			if (why)
				fr_status("BAD %s", why);
			else
				fr_status("ok pid=%d checks=%lu vmlck=%ld", (int)getpid(), ++checks,
					  vmlck_kb());
		}
		counter++;
		fr_log_tick(counter);
		struct timespec ts = {0, 20 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
}
