/* Holds one thing the engine does not support yet, then counts like the general victim:
 *   refuse STATEDIR eventfd | socket | thread | seccomp-filter | seccomp-strict | packet | mseal
 *                   | dnotify | aio | ipc-ns | mqueue | sem-undo-host | sem-undo-host-zero
 * sem-undo-host: a SysV semaphore set of the host's IPC namespace (reported "semid=N") on
 * which it holds a SEM_UNDO adjustment (a +1 made with SEM_UNDO: -1 at its exit), and a second thread; -zero: the adjustment
 * went back to 0.
 * aio: a Linux AIO context with requests always in flight (a poll on each of 16 timerfds whose
 * expiries are spread 5 ms apart, armed again as the loop reaps them).
 * ipc-ns: in its own IPC namespace (unshare(CLONE_NEWIPC)), a SysV message queue holding one
 * message, a set of two semaphores and a POSIX message queue no descriptor holds. mqueue: a POSIX message queue (its name unlinked at
 * once) holding one message.
 * Reports "fd=N" for the fd it holds. SIGUSR1: "ok pid=P counter=N". */
#include "common.h"

#include <linux/if_packet.h>

#include <linux/aio_abi.h>
#include <poll.h>
#include <sys/timerfd.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <fcntl.h>
#include <mqueue.h>
#include <sched.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/syscall.h>
#include <sys/prctl.h>
#include <sys/socket.h>

static void *thread_main(void *arg)
{
	(void)arg;
	for (;;) {
		struct timespec ts = {0, 50 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	return NULL;
}

static aio_context_t aio_ctx;
static int aio_tfd[16];
static struct iocb aio_cb[16];

static void aio_arm(int i)
{
	aio_cb[i] = (struct iocb){.aio_data = (uint64_t)i, .aio_lio_opcode = IOCB_CMD_POLL,
				  .aio_fildes = (uint32_t)aio_tfd[i], .aio_buf = POLLIN};
	struct iocb *p = &aio_cb[i];
	if (syscall(SYS_io_submit, aio_ctx, 1, &p) != 1)
		fr_die("io_submit");
}

/* Reaps the completed polls and arms them again. */
static void aio_pump(void)
{
	struct io_event ev[16];
	struct timespec zero = {0, 0};
	long n = syscall(SYS_io_getevents, aio_ctx, 0, 16, ev, &zero);
	for (long k = 0; k < n; k++) {
		uint64_t i = ev[k].data % 16, x;
		if (read(aio_tfd[i], &x, 8) != 8)
			fr_die("timerfd read");
		aio_arm((int)i);
	}
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	const char *mode = argc > 2 ? argv[2] : "";
	int strict = 0;
	if (!strcmp(mode, "eventfd")) {
		int fd = eventfd(3, 0);
		if (fd < 0)
			fr_die("eventfd");
		fr_status("fd=%d", fd);
	} else if (!strcmp(mode, "socket")) {
		int fd = socket(AF_UNIX, SOCK_STREAM, 0);
		if (fd < 0)
			fr_die("socket");
		fr_status("fd=%d", fd);
	} else if (!strcmp(mode, "packet")) {
		/* A packet socket with a receive ring (refused; a plain one is carried). */
		int fd = socket(AF_PACKET, SOCK_DGRAM, 0);
		struct tpacket_req req = {.tp_block_size = 4096, .tp_block_nr = 1, .tp_frame_size = 2048, .tp_frame_nr = 2};
		if (fd < 0 || setsockopt(fd, SOL_PACKET, PACKET_RX_RING, &req, sizeof(req)))
			fr_die("packet socket");
		fr_status("fd=%d", fd);
	} else if (!strcmp(mode, "thread")) {
		pthread_t t;
		if (pthread_create(&t, NULL, thread_main, NULL))
			fr_die("pthread_create");
	} else if (!strcmp(mode, "seccomp-filter")) {
		struct sock_filter allow[] = {BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)};
		struct sock_fprog prog = {.len = 1, .filter = allow};
		if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
			fr_die("no_new_privs");
		if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0))
			fr_die("seccomp filter");
	} else if (!strcmp(mode, "mseal")) {
		/* A sealed mapping (Linux 6.10): its VMA carries VmFlags sl. */
		void *p = mmap(NULL, 2 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
			       -1, 0);
		if (p == MAP_FAILED)
			fr_die("mmap");
		if (syscall(462 /* mseal */, p, 2 * 4096, 0))
			fr_die("mseal");
		fr_status("vma=%p", p);
	} else if (!strcmp(mode, "dnotify")) {
		/* A directory watched with F_NOTIFY (dnotify). */
		char p[4096];
		snprintf(p, sizeof(p), "%s/watched", fr_dir);
		mkdir(p, 0755);
		int fd = open(p, O_RDONLY | O_DIRECTORY);
		if (fd < 0 || fcntl(fd, F_NOTIFY, DN_CREATE | DN_MULTISHOT))
			fr_die("F_NOTIFY");
		fr_status("fd=%d", fd);
	} else if (!strcmp(mode, "aio")) {
		if (syscall(SYS_io_setup, 64, &aio_ctx))
			fr_die("io_setup");
		for (int i = 0; i < 16; i++) {
			aio_tfd[i] = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
			struct itimerspec its = {.it_interval = {0, 80 * 1000 * 1000},
						 .it_value = {0, (i + 1) * 5 * 1000 * 1000}};
			if (aio_tfd[i] < 0 || timerfd_settime(aio_tfd[i], 0, &its, NULL))
				fr_die("timerfd");
			aio_arm(i);
		}
		fr_status("ctx=%llx", (unsigned long long)aio_ctx);
	} else if (!strcmp(mode, "ipc-ns")) {
		if (unshare(CLONE_NEWIPC))
			fr_die("unshare(CLONE_NEWIPC)");
		int q = msgget(IPC_PRIVATE, IPC_CREAT | 0600);
		struct {
			long type;
			char text[8];
		} m = {3, "queued"};
		if (q < 0 || msgsnd(q, &m, sizeof(m.text), 0))
			fr_die("msgget/msgsnd");
		if (semget(IPC_PRIVATE, 2, IPC_CREAT | 0600) < 0)
			fr_die("semget");
		/* A POSIX message queue of the namespace, held by no descriptor: not carried. */
		char name[64];
		snprintf(name, sizeof(name), "ferry-ipcns-%d", (int)getpid());
		struct mq_attr a = {0, 4, 32, 0, {0}};
		int fd = (int)syscall(SYS_mq_open, name, O_RDWR | O_CREAT | O_EXCL, 0600, &a);
		if (fd < 0)
			fr_die("mq_open");
		close(fd);
	} else if (!strcmp(mode, "mqueue")) {
		/* The system calls, not librt's wrappers: no leading slash. */
		char name[64];
		snprintf(name, sizeof(name), "ferry-refuse-%d", (int)getpid());
		struct mq_attr a = {0, 4, 32, 0, {0}};
		int fd = (int)syscall(SYS_mq_open, name, O_RDWR | O_CREAT | O_EXCL, 0600, &a);
		if (fd < 0)
			fr_die("mq_open");
		syscall(SYS_mq_unlink, name);
		if (syscall(SYS_mq_timedsend, fd, "queued", 6, 1, NULL))
			fr_die("mq_timedsend");
		fr_status("fd=%d", fd);
	} else if (!strcmp(mode, "sem-undo-host") || !strcmp(mode, "sem-undo-host-zero")) {
		/* In the host's IPC namespace, with a second thread (which gives the process an
		 * undo list whatever it does): +1 with SEM_UNDO, and for -zero -1 again. */
		pthread_t t;
		if (pthread_create(&t, NULL, thread_main, NULL))
			fr_die("pthread_create");
		int id = semget(IPC_PRIVATE, 2, 0600);
		if (id < 0)
			fr_die("semget");
		fr_status("semid=%d", id);
		struct sembuf up = {1, 1, SEM_UNDO};
		if (semop(id, &up, 1))
			fr_die("semop +1");
		if (!strcmp(mode, "sem-undo-host-zero")) {
			struct sembuf down = {1, -1, SEM_UNDO};
			if (semop(id, &down, 1))
				fr_die("semop -1");
		}
	} else if (!strcmp(mode, "seccomp-strict")) {
		strict = 1;
	} else {
		fprintf(stderr, "unknown mode %s\n", mode);
		return 2;
	}
	fr_ready();
	if (strict) {
		/* Only read, write, _exit and sigreturn from here on: no nanosleep, count by spinning. */
		if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT, 0, 0, 0))
			fr_die("seccomp strict");
		unsigned long counter = 0;
		for (;;) {
			for (volatile unsigned long i = 0; i < 20000000ul; i++)
				;
			if (fr_usr1_pending) {
				fr_usr1_pending = 0;
				fr_status("ok pid=%d counter=%lu", (int)fr_pid0, counter);
			}
			counter++;
			fr_log_tick(counter);
		}
	}
	unsigned long counter = 0;
	for (;;) {
		if (fr_usr1_pending) {
			fr_usr1_pending = 0;
			fr_status("ok pid=%d counter=%lu", (int)getpid(), counter);
		}
		counter++;
		fr_log_tick(counter);
		if (aio_ctx)
			aio_pump();
		struct timespec ts = {0, 20 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
}
