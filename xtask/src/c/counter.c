/* The demo's victim: counts up every 200 ms and prints "pid P: N" to its log file and stdout.
 * Usage: counter LOGFILE */
#include <fcntl.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: counter LOGFILE\n");
        return 2;
    }
    int log = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (log < 0) {
        perror("open log");
        return 1;
    }
    struct timespec tick = {0, 200 * 1000 * 1000};
    for (unsigned long n = 1;; n++) {
        dprintf(log, "pid %d: %lu\n", getpid(), n);
        printf("pid %d: %lu\n", getpid(), n);
        fflush(stdout);
        nanosleep(&tick, NULL);
    }
}
