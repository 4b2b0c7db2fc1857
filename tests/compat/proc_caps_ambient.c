/* Ambient capability CAP_NET_BIND_SERVICE raised (with it permitted and inheritable; CAP_SYS_ADMIN
 * dropped from every set): PR_CAP_AMBIENT_IS_SET reads it, others are not set.
 * compat-object: ambient capabilities
 */
#include "common.h"

#include <linux/capability.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

static const char *check(void)
{
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET, CAP_NET_BIND_SERVICE, 0, 0) != 1)
		return "CAP_NET_BIND_SERVICE is not ambient";
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET, CAP_KILL, 0, 0) != 0)
		return "CAP_KILL is ambient";
	struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
	struct __user_cap_data_struct d[2];
	syscall(SYS_capget, &h, d);
	if (d[0].effective & (1u << CAP_SYS_ADMIN))
		return "CAP_SYS_ADMIN is effective again";
	return NULL;
}

static void setup(void)
{
	struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
	struct __user_cap_data_struct d[2];
	syscall(SYS_capget, &h, d);
	d[0].inheritable |= 1u << CAP_NET_BIND_SERVICE;
	d[0].effective &= ~(1u << CAP_SYS_ADMIN);
	d[0].permitted &= ~(1u << CAP_SYS_ADMIN);
	if (syscall(SYS_capset, &h, d))
		fr_die("capset");
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_NET_BIND_SERVICE, 0, 0))
		fr_die("PR_CAP_AMBIENT_RAISE");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	setup();
	fr_ready();
	for (unsigned long tick = 1;; tick++) {
		if (fr_usr1_pending) {
			fr_usr1_pending = 0;
			const char *why = getpid() != fr_pid0 ? "getpid() changed" : check();
			if (why)
				fr_status("BAD %s", why);
			else
				fr_status("ok pid=%d", (int)getpid());
		}
		fr_log_tick(tick);
		usleep(10000);
	}
}
