/* A CPU-bound job for the policy test (tests/tests/policy.rs): spins without pause, printing
 * "spin N" about once a second (flushed), until killed.
 *
 *   spin
 */
#include <stdio.h>
#include <time.h>

int main(void)
{
	volatile unsigned long x = 0;
	unsigned long n = 0;
	time_t last = time(NULL);
	for (;;) {
		x++;
		if ((x & 0xfffff) == 0) {
			time_t t = time(NULL);
			if (t != last) {
				last = t;
				printf("spin %lu\n", ++n);
				fflush(stdout);
			}
		}
	}
	return 0;
}
