/* proc_membarrier STATEDIR
 *
 * Registers for membarrier(2) private expedited barriers (and the RSEQ kind where the kernel
 * has it; SYNC_CORE is left unregistered). On SIGUSR1 it checks that exactly the kinds it
 * registered work (an unregistered kind fails with EPERM).
 * Reports "ok registered=MASK" or "BAD ...".
 */
#include "common.h"
#include <linux/membarrier.h>
#include <sys/syscall.h>

static int registered;

static int mb(int cmd) { return (int)syscall(SYS_membarrier, cmd, 0, 0); }

static void check(void)
{
	static const int probe[][2] = {
		{MEMBARRIER_CMD_PRIVATE_EXPEDITED, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED},
		{MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE,
		 MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE},
		{MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ},
	};
	int now = 0;
	for (int i = 0; i < 3; i++)
		if (mb(probe[i][0]) == 0)
			now |= probe[i][1];
	if (now != registered)
		return fr_status("BAD registered %#x, was %#x", now, registered);
	fr_status("ok registered=%#x", registered);
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	int q = mb(MEMBARRIER_CMD_QUERY);
	if (q < 0 || !(q & MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED))
		fr_die("membarrier query");
	if (mb(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED))
		fr_die("register private expedited");
	registered = MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED;
	/* RSEQ (when there) registered too; SYNC_CORE left out: one kind stays unregistered. */
	if ((q & MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ) &&
	    mb(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ) == 0)
		registered |= MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ;
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
