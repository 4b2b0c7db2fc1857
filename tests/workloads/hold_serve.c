/* A server that reads only when told: listens on 0.0.0.0 (port 0), prints "listen PORT" and
 * "ready". It accepts nothing until its stdin says "read": then it accepts one connection,
 * reads it to its end and prints "got N" (the bytes read). Stdin "exit N" exits with N. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(void) {
    struct sockaddr_in any = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_ANY)};
    int lst = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lst, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (lst < 0 || bind(lst, (struct sockaddr *)&any, sizeof any) || listen(lst, 8)) {
        perror("listen");
        return 1;
    }
    socklen_t len = sizeof any;
    getsockname(lst, (struct sockaddr *)&any, &len);
    printf("listen %u\nready\n", ntohs(any.sin_port));
    fflush(stdout);
    char line[64];
    static char buf[1 << 16];
    while (fgets(line, sizeof line, stdin)) {
        if (strncmp(line, "exit ", 5) == 0) return atoi(line + 5);
        if (strncmp(line, "read", 4) == 0) {
            int c = accept4(lst, NULL, NULL, SOCK_CLOEXEC);
            unsigned long total = 0;
            ssize_t n;
            while (c >= 0 && (n = read(c, buf, sizeof buf)) > 0) total += (unsigned long)n;
            printf("got %lu\n", total);
            fflush(stdout);
            if (c >= 0) close(c);
        }
    }
    return 0;
}
