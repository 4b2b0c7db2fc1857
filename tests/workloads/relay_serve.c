/* A line server to migrate under load: listens on 0.0.0.0 (port 0), prints "listen PORT" and
 * "ready". Each line LINE received on a connection gets "re: LINE\n" back; after a line
 * starting with "bye" it closes the connection itself; at the end of a connection's input it
 * closes it. The stdin line "exit N" exits with N; "count" prints "handled N" (lines
 * answered so far). Many connections at once (epoll). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAXFD 65536
#define LINE 512

static char *bufs[MAXFD];
static size_t have[MAXFD];
static unsigned long handled;

static void say(const char *s) { (void)!write(1, s, strlen(s)); }

static int write_all(int fd, const char *p, size_t n) {
    while (n > 0) {
        ssize_t k = write(fd, p, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return -1;
        p += k;
        n -= k;
    }
    return 0;
}

static void drop(int ep, int fd) {
    epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
    close(fd);
    free(bufs[fd]);
    bufs[fd] = NULL;
    have[fd] = 0;
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    struct sockaddr_in any = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_ANY)};
    int lst = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lst, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(lst, (struct sockaddr *)&any, sizeof any) || listen(lst, 1024)) return 3;
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    getsockname(lst, (struct sockaddr *)&a, &len);
    char out[LINE + 64];
    snprintf(out, sizeof out, "listen %d\nready\n", ntohs(a.sin_port));
    say(out);

    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = 0};
    epoll_ctl(ep, EPOLL_CTL_ADD, 0, &ev);
    ev.data.fd = lst;
    epoll_ctl(ep, EPOLL_CTL_ADD, lst, &ev);
    char in[LINE];
    size_t in_have = 0;
    struct epoll_event evs[64];
    for (;;) {
        int n = epoll_wait(ep, evs, 64, -1);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return 4;
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == 0) {
                ssize_t k = read(0, in + in_have, sizeof in - in_have - 1);
                if (k <= 0) return 0;
                in_have += k;
                char *nl;
                while ((nl = memchr(in, '\n', in_have))) {
                    *nl = 0;
                    if (!strncmp(in, "exit ", 5)) exit(atoi(in + 5));
                    if (!strcmp(in, "count")) {
                        snprintf(out, sizeof out, "handled %lu\n", handled);
                        say(out);
                    }
                    size_t used = nl - in + 1;
                    memmove(in, nl + 1, in_have - used);
                    in_have -= used;
                }
                if (in_have == sizeof in - 1) in_have = 0;
            } else if (fd == lst) {
                int c = accept4(lst, NULL, NULL, SOCK_CLOEXEC);
                if (c < 0) continue;
                if (c >= MAXFD) {
                    close(c);
                    continue;
                }
                bufs[c] = malloc(LINE);
                have[c] = 0;
                struct epoll_event ce = {.events = EPOLLIN, .data.fd = c};
                epoll_ctl(ep, EPOLL_CTL_ADD, c, &ce);
            } else {
                char *b = bufs[fd];
                ssize_t k = read(fd, b + have[fd], LINE - have[fd] - 1);
                if (k < 0 && (errno == EINTR || errno == EAGAIN)) continue;
                if (k <= 0) {
                    drop(ep, fd);
                    continue;
                }
                have[fd] += k;
                char *nl;
                int bye = 0;
                while (!bye && (nl = memchr(b, '\n', have[fd]))) {
                    size_t used = nl - b + 1;
                    int m = snprintf(out, sizeof out, "re: %.*s\n", (int)(used - 1), b);
                    handled++;
                    bye = !strncmp(b, "bye", 3);
                    if (write_all(fd, out, m)) bye = 1;
                    memmove(b, nl + 1, have[fd] - used);
                    have[fd] -= used;
                }
                if (bye) {
                    drop(ep, fd);
                } else if (have[fd] == LINE - 1) {
                    have[fd] = 0;
                }
            }
        }
    }
}
