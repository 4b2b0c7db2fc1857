/* forest N: a tree of N processes. The root forks up to 9 children, which fork the rest as
 * grandchildren; each reports on a pipe that it runs, then closes it and waits in pause().
 * The root prints "ready" once all N exist. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static int sync_pipe[2];

static void settle(void)
{
	close(sync_pipe[0]);
	if (write(sync_pipe[1], "x", 1) != 1)
		_exit(1);
	close(sync_pipe[1]);
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 100;
	if (n < 1 || pipe(sync_pipe))
		return 1;
	int kids = n - 1 < 9 ? n - 1 : 9;
	int rest = n - 1 - kids;
	for (int i = 0; i < kids; i++) {
		int grand = rest / kids + (i < rest % kids);
		if (fork() == 0) {
			for (int j = 0; j < grand; j++) {
				if (fork() == 0) {
					settle();
					for (;;)
						pause();
				}
			}
			settle();
			for (;;)
				pause();
		}
	}
	close(sync_pipe[1]);
	char c;
	for (int i = 1; i < n; i++)
		if (read(sync_pipe[0], &c, 1) != 1)
			return 1;
	close(sync_pipe[0]);
	printf("ready\n");
	fflush(stdout);
	for (;;)
		pause();
}
