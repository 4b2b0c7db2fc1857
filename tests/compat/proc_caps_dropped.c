/* Capabilities: effective set reduced to CAP_KILL|CAP_SETUID|CAP_SETGID, permitted keeps also
 * CAP_NET_ADMIN and CAP_SYS_ADMIN, inheritable CAP_NET_BIND_SERVICE: capget reads all three back.
 * compat-object: capability sets (effective, permitted, inheritable)
 */
#include "common.h"

#include <linux/capability.h>
#include <sys/syscall.h>

static struct __user_cap_data_struct want[2];

static const char *check(void)
{
	static char why[256];
	struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
	struct __user_cap_data_struct d[2];
	if (syscall(SYS_capget, &h, d))
		return "capget";
	for (int i = 0; i < 2; i++)
		if (d[i].effective != want[i].effective || d[i].permitted != want[i].permitted ||
		    d[i].inheritable != want[i].inheritable) {
			snprintf(why, sizeof(why), "word %d: eff %#x perm %#x inh %#x, want %#x %#x %#x", i,
				 d[i].effective, d[i].permitted, d[i].inheritable, want[i].effective,
				 want[i].permitted, want[i].inheritable);
			return why;
		}
	return NULL;
}

static void setup(void)
{
	unsigned long long eff = 1ull << CAP_KILL | 1ull << CAP_SETUID | 1ull << CAP_SETGID;
	unsigned long long perm = eff | 1ull << CAP_NET_ADMIN | 1ull << CAP_SYS_ADMIN | 1ull << CAP_NET_BIND_SERVICE;
	unsigned long long inh = 1ull << CAP_NET_BIND_SERVICE;
	want[0].effective = (unsigned)eff;
	want[0].permitted = (unsigned)perm;
	want[0].inheritable = (unsigned)inh;
	struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
	if (syscall(SYS_capset, &h, want))
		fr_die("capset");
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
