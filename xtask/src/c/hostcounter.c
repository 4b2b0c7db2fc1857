/* The two-host demo's victim: every 300 ms prints its count, its PID and the host it runs on.
 * Exits 0 after COUNT lines when a COUNT argument is given. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    unsigned long last = argc > 1 ? strtoul(argv[1], NULL, 10) : 0;
    struct timespec tick = {0, 300 * 1000 * 1000};
    char host[64];
    for (unsigned long n = 1; last == 0 || n <= last; n++) {
        if (gethostname(host, sizeof host))
            snprintf(host, sizeof host, "?");
        printf("[count %3lu] pid %d on %s\n", n, getpid(), host);
        fflush(stdout);
        nanosleep(&tick, NULL);
    }
    return 0;
}
