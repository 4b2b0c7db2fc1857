/* threads N: N-1 extra threads that each sleep 1 ms in a loop; prints "ready" once all run. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static void *spin(void *arg)
{
	(void)arg;
	for (;;)
		usleep(1000);
	return NULL;
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 64;
	for (int i = 1; i < n; i++) {
		pthread_t t;
		if (pthread_create(&t, NULL, spin, NULL))
			return 1;
	}
	printf("ready\n");
	fflush(stdout);
	for (;;)
		pause();
}
