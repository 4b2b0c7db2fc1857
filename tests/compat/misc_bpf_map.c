/* A BPF array map with a value stored in it. Ferry cannot carry BPF objects: the dump should
 * refuse it, naming it.
 * compat-object: BPF map descriptor
 * compat-refuse: bpf
 */
#include "common.h"

#include <linux/bpf.h>
#include <sys/syscall.h>

static int mfd;

static void check(void)
{
	uint32_t key = 3;
	uint64_t val = 0;
	union bpf_attr a;
	memset(&a, 0, sizeof(a));
	a.map_fd = (uint32_t)mfd;
	a.key = (uint64_t)(uintptr_t)&key;
	a.value = (uint64_t)(uintptr_t)&val;
	if (syscall(SYS_bpf, BPF_MAP_LOOKUP_ELEM, &a, sizeof(a)) || val != 0x1122334455667788ull) {
		fr_status("BAD map value %llx: %s", (unsigned long long)val, strerror(errno));
		return;
	}
	fr_status("ok");
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	union bpf_attr a;
	memset(&a, 0, sizeof(a));
	a.map_type = BPF_MAP_TYPE_ARRAY;
	a.key_size = 4;
	a.value_size = 8;
	a.max_entries = 8;
	mfd = (int)syscall(SYS_bpf, BPF_MAP_CREATE, &a, sizeof(a));
	if (mfd < 0)
		fr_die("bpf map create");
	uint32_t key = 3;
	uint64_t val = 0x1122334455667788ull;
	memset(&a, 0, sizeof(a));
	a.map_fd = (uint32_t)mfd;
	a.key = (uint64_t)(uintptr_t)&key;
	a.value = (uint64_t)(uintptr_t)&val;
	if (syscall(SYS_bpf, BPF_MAP_UPDATE_ELEM, &a, sizeof(a)))
		fr_die("bpf update");
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
