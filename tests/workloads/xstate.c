/* Keeps known values in vector registers (ymm0-ymm14; with AVX-512 also zmm16-zmm31 and
 * compat-object: vector registers (AVX)
 * k2-k7) and a non-default MXCSR inside an assembly loop that makes no system call and compares
 * them against memory on every iteration. A checkpoint lands inside that loop. SIGUSR1 ends the
 * loop: "ok xstate iters=N avx512=0|1", or "BAD xstate reg=R" (R: 0-14 ymm, 16-31 zmm,
 * 32+k for k registers, 99 for MXCSR). The loop then starts again. */
#include "common.h"

#include <cpuid.h>

static uint64_t ymm_expected[15][4] __attribute__((aligned(64)));
static uint64_t zmm_expected[16][8] __attribute__((aligned(64)));
static uint64_t k_expected[8];
static volatile int stop;
static volatile uint64_t iters;

/* rdi = ymm_expected, rsi = &stop, rdx = &iters, rcx = zmm_expected (or NULL), r8 = k_expected.
 * Returns -1 when every comparison held until stop was set, else the register number. */
long vec_loop(void *ymm, volatile int *stop_flag, volatile uint64_t *count, void *zmm, void *k);
__asm__(
	".text\n"
	".globl vec_loop\n"
	".type vec_loop, @function\n"
	"vec_loop:\n"
	"	.irp i,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14\n"
	"	vmovdqa \\i*32(%rdi), %ymm\\i\n"
	"	.endr\n"
	"	test %rcx, %rcx\n"
	"	jz 1f\n"
	"	.irp i,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31\n"
	"	vmovdqa64 (\\i-16)*64(%rcx), %zmm\\i\n"
	"	.endr\n"
	"	.irp i,2,3,4,5,6,7\n"
	"	kmovw \\i*8(%r8), %k\\i\n"
	"	.endr\n"
	"1:\n"
	"	stmxcsr -8(%rsp)\n"
	"	mov $99, %eax\n"
	"	cmpl $0x7f80, -8(%rsp)\n"
	"	jne 8f\n"
	"	.irp i,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14\n"
	"	mov $\\i, %eax\n"
	"	vpcmpeqq \\i*32(%rdi), %ymm\\i, %ymm15\n"
	"	vpmovmskb %ymm15, %r9d\n"
	"	cmp $-1, %r9d\n"
	"	jne 8f\n"
	"	.endr\n"
	"	test %rcx, %rcx\n"
	"	jz 2f\n"
	"	.irp i,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31\n"
	"	mov $\\i, %eax\n"
	"	vpcmpeqd (\\i-16)*64(%rcx), %zmm\\i, %k1\n"
	"	kortestw %k1, %k1\n"
	"	jnc 8f\n"
	"	.endr\n"
	"	.irp i,2,3,4,5,6,7\n"
	"	mov $32+\\i, %eax\n"
	"	kmovw %k\\i, %r9d\n"
	"	cmpw \\i*8(%r8), %r9w\n"
	"	jne 8f\n"
	"	.endr\n"
	"2:\n"
	"	incq (%rdx)\n"
	"	cmpl $0, (%rsi)\n"
	"	je 1b\n"
	"	mov $-1, %rax\n"
	"	vzeroupper\n"
	"	ret\n"
	"8:\n"
	"	movslq %eax, %rax\n"
	"	vzeroupper\n"
	"	ret\n"
	".size vec_loop, .-vec_loop\n");

static void on_usr1(int sig)
{
	(void)sig;
	stop = 1;
	fr_usr1_count++;
}

static int have_avx512(void)
{
	unsigned a, b, c, d;
	if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_OSXSAVE))
		return 0;
	unsigned lo, hi;
	__asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
	if ((lo & 0xe6) != 0xe6)
		return 0;
	if (!__get_cpuid_count(7, 0, &a, &b, &c, &d))
		return 0;
	return (b & bit_AVX512F) != 0;
}

static int have_avx2(void)
{
	unsigned a, b, c, d;
	if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_OSXSAVE) || !(c & bit_AVX))
		return 0;
	unsigned lo, hi;
	__asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
	if ((lo & 6) != 6)
		return 0;
	if (!__get_cpuid_count(7, 0, &a, &b, &c, &d))
		return 0;
	return (b & bit_AVX2) != 0;
}

int main(int argc, char **argv)
{
	fr_init(argc, argv);
	if (!have_avx2()) {
		fr_status("unsupported no AVX2");
		for (;;)
			pause();
	}
	int avx512 = have_avx512();
	uint64_t s = 0x5eed0000 ^ (uint64_t)getpid();
	for (int i = 0; i < 15; i++)
		for (int j = 0; j < 4; j++)
			ymm_expected[i][j] = fr_xorshift(&s);
	for (int i = 0; i < 16; i++)
		for (int j = 0; j < 8; j++)
			zmm_expected[i][j] = fr_xorshift(&s);
	for (int i = 0; i < 8; i++)
		k_expected[i] = fr_xorshift(&s) & 0xffff;
	fr_install(SIGUSR1, on_usr1, SA_RESTART);
	unsigned int mxcsr = 0x7f80;
	__asm__ volatile("ldmxcsr %0" : : "m"(mxcsr));
	fr_ready();
	for (;;) {
		stop = 0;
		iters = 0;
		long r = vec_loop(ymm_expected, &stop, &iters, avx512 ? zmm_expected : NULL, k_expected);
		if (r < 0)
			fr_status("ok xstate pid=%d iters=%llu avx512=%d", (int)getpid(),
				  (unsigned long long)iters, avx512);
		else
			fr_status("BAD xstate reg=%ld iters=%llu", r, (unsigned long long)iters);
		if (r >= 0)
			pause();
	}
}
