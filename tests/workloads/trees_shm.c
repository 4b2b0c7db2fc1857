/* Memory shared between a parent (P) and its child (C), of every kind:
 *   anon   MAP_SHARED|MAP_ANONYMOUS, inherited across fork;
 *   sysv   a SysV segment attached before fork and marked removed (IPC_RMID);
 *   sysvk  a SysV segment with a key, attached by each process on its own, left in place;
 *   memfd  a memfd mapped before fork; the child also opens it again by itself;
 *   posix  a POSIX shm object (/dev/shm/NAME), mapped by each process on its own.
 * Each process increments its own counter (slot 0 for P, 1 for C) in every area, all the
 * time. Usage: trees_shm DIR SHMNAME SYSVKEY. DIR/ready appears once both run. On SIGUSR1 each
 * process notes the other's counters, waits 100 ms and reports one line to DIR/report:
 * "NAME ok anon=N sysv=N sysvk=N memfd=N posix=N" (its own counters) when every counter of
 * the other moved, "NAME BAD what" otherwise. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define AREAS 5
static const char *names[AREAS] = {"anon", "sysv", "sysvk", "memfd", "posix"};
static volatile unsigned long *area[AREAS];
static const char *dir;
static volatile sig_atomic_t go;
static void on_usr1(int s) { (void)s; go = 1; }

static void die(const char *what)
{
	fprintf(stderr, "%s: %s\n", what, strerror(errno));
	exit(2);
}

static void append(const char *file, const char *line)
{
	char path[512];
	snprintf(path, sizeof path, "%s/%s", dir, file);
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT, 0644);
	if (fd < 0 || write(fd, line, strlen(line)) != (ssize_t)strlen(line))
		_exit(90);
	close(fd);
}

static void run(const char *name, int me)
{
	int other = 1 - me;
	for (;;) {
		for (int i = 0; i < AREAS; i++)
			area[i][me]++;
		struct timespec ts = {0, 1000000};
		nanosleep(&ts, NULL);
		if (!go)
			continue;
		go = 0;
		unsigned long seen[AREAS];
		for (int i = 0; i < AREAS; i++)
			seen[i] = area[i][other];
		for (int n = 0; n < 100; n++) {
			for (int i = 0; i < AREAS; i++)
				area[i][me]++;
			nanosleep(&ts, NULL);
		}
		char line[512];
		int len = 0;
		for (int i = 0; i < AREAS; i++)
			if (area[i][other] == seen[i]) {
				snprintf(line, sizeof line, "%s BAD %s: the other's counter stays at %lu\n",
					 name, names[i], seen[i]);
				append("report", line);
				len = -1;
				break;
			}
		if (len < 0)
			continue;
		len = snprintf(line, sizeof line, "%s ok", name);
		for (int i = 0; i < AREAS; i++)
			len += snprintf(line + len, sizeof line - len, " %s=%lu", names[i], area[i][me]);
		snprintf(line + len, sizeof line - len, "\n");
		append("report", line);
	}
}

static void *map_fd(int fd)
{
	void *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		die("mmap fd");
	return p;
}

static void *attach_keyed(key_t key)
{
	int id = shmget(key, 8192, IPC_CREAT | 0600);
	if (id < 0)
		die("shmget key");
	void *p = shmat(id, NULL, 0);
	if (p == (void *)-1)
		die("shmat key");
	return p;
}

int main(int argc, char **argv)
{
	if (argc < 4)
		return 2;
	dir = argv[1];
	const char *shm_name = argv[2];
	key_t key = (key_t)strtol(argv[3], NULL, 0);
	signal(SIGUSR1, on_usr1);

	area[0] = mmap(NULL, 3 * 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (area[0] == MAP_FAILED)
		die("mmap anon");
	int id = shmget(IPC_PRIVATE, 2 * 4096, IPC_CREAT | 0600);
	if (id < 0)
		die("shmget");
	area[1] = shmat(id, NULL, 0);
	if (area[1] == (void *)-1)
		die("shmat");
	if (shmctl(id, IPC_RMID, NULL) < 0)
		die("IPC_RMID");
	int mfd = memfd_create("trees-shm", MFD_CLOEXEC);
	if (mfd < 0 || ftruncate(mfd, 4096) < 0)
		die("memfd");
	area[3] = map_fd(mfd);
	int pfd = shm_open(shm_name, O_RDWR | O_CREAT, 0600);
	if (pfd < 0 || ftruncate(pfd, 4096) < 0)
		die("shm_open");
	close(pfd);

	pid_t child = fork();
	if (child < 0)
		die("fork");
	if (child == 0) {
		char path[64];
		snprintf(path, sizeof path, "/proc/self/fd/%d", mfd);
		/* A description of its own, besides the inherited one. */
		if (open(path, O_RDWR | O_CLOEXEC) < 0)
			die("reopen the memfd");
		area[2] = attach_keyed(key);
		pfd = shm_open(shm_name, O_RDWR, 0);
		if (pfd < 0)
			die("shm_open child");
		area[4] = map_fd(pfd);
		close(pfd);
		char ready[512];
		snprintf(ready, sizeof ready, "%s/ready", dir);
		close(open(ready, O_WRONLY | O_CREAT, 0644));
		run("C", 1);
	}
	area[2] = attach_keyed(key);
	pfd = shm_open(shm_name, O_RDWR, 0);
	if (pfd < 0)
		die("shm_open parent");
	area[4] = map_fd(pfd);
	close(pfd);
	run("P", 0);
	return 0;
}
