/* A job for the offload client (tests/tests/offload.rs): prints "tick N" on stdout every
 * INTERVAL_MS milliseconds (default 100), flushing each line; with COUNT > 0 it exits with
 * code EXIT after COUNT ticks, else it runs until killed.
 *
 *   ticker [COUNT [EXIT [INTERVAL_MS]]]
 */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	long count = argc > 1 ? atol(argv[1]) : 0;
	int code = argc > 2 ? atoi(argv[2]) : 0;
	long interval = argc > 3 ? atol(argv[3]) : 100;
	for (long i = 1; count <= 0 || i <= count; i++) {
		printf("tick %ld\n", i);
		fflush(stdout);
		usleep(interval * 1000);
	}
	return code;
}
