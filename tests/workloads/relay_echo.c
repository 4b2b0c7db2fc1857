/* A process to migrate with its relays: echoes stdin lines to stdout ("echo: LINE"), and
 * bytes on an established TCP connection (to 127.0.0.1:ARGV1), on connections accepted by its
 * own listener and on a UDP socket back to their senders, prefixed "tcp: ", "acc: ", "udp: ".
 * SIGUSR1 prints "usr1"; the line "exit N" exits with N. Prints "listen PORT", "udp PORT"
 * and "ready" at start. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static volatile sig_atomic_t usr1;
static void on_usr1(int sig) { (void)sig; usr1 = 1; }

static void say(const char *s) { (void)!write(1, s, strlen(s)); }

static int port_of(int fd) {
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &len);
    return ntohs(a.sin_port);
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    struct sigaction sa = {0};
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    struct sockaddr_in lo = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int lst = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (bind(lst, (struct sockaddr *)&lo, sizeof lo) || listen(lst, 16)) return 3;
    int udp = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (bind(udp, (struct sockaddr *)&lo, sizeof lo)) return 4;
    struct sockaddr_in srv = lo;
    srv.sin_port = htons(atoi(argv[1]));
    int conn = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (connect(conn, (struct sockaddr *)&srv, sizeof srv)) return 5;

    char buf[4096], out[4200];
    snprintf(out, sizeof out, "listen %d\nudp %d\nready\n", port_of(lst), port_of(udp));
    say(out);

    struct pollfd fds[64];
    int n = 4;
    fds[0] = (struct pollfd){.fd = 0, .events = POLLIN};
    fds[1] = (struct pollfd){.fd = lst, .events = POLLIN};
    fds[2] = (struct pollfd){.fd = udp, .events = POLLIN};
    fds[3] = (struct pollfd){.fd = conn, .events = POLLIN};
    char line[4096];
    size_t have = 0;
    for (;;) {
        if (usr1) {
            usr1 = 0;
            say("usr1\n");
        }
        int r = poll(fds, n, 50);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) continue;
        for (int i = 0; i < n; i++) {
            if (!fds[i].revents) continue;
            int fd = fds[i].fd;
            if (i == 0) {
                ssize_t k = read(0, line + have, sizeof line - have - 1);
                if (k <= 0) return 0;
                have += k;
                char *nl;
                while ((nl = memchr(line, '\n', have))) {
                    *nl = 0;
                    if (!strncmp(line, "exit ", 5)) exit(atoi(line + 5));
                    snprintf(out, sizeof out, "echo: %s\n", line);
                    say(out);
                    size_t used = nl - line + 1;
                    memmove(line, nl + 1, have - used);
                    have -= used;
                }
            } else if (i == 1) {
                int c = accept4(lst, NULL, NULL, SOCK_CLOEXEC);
                if (c >= 0 && n < 64) fds[n++] = (struct pollfd){.fd = c, .events = POLLIN};
            } else if (i == 2) {
                struct sockaddr_in from;
                socklen_t len = sizeof from;
                ssize_t k = recvfrom(udp, buf, sizeof buf, 0, (struct sockaddr *)&from, &len);
                if (k < 0) continue;
                int m = snprintf(out, sizeof out, "udp: %.*s", (int)k, buf);
                sendto(udp, out, m, 0, (struct sockaddr *)&from, len);
            } else {
                ssize_t k = read(fd, buf, sizeof buf);
                if (k <= 0) {
                    close(fd);
                    fds[i] = fds[--n];
                    i--;
                    continue;
                }
                int m = snprintf(out, sizeof out, "%s%.*s", i == 3 ? "tcp: " : "acc: ", (int)k, buf);
                (void)!write(fd, out, m);
            }
        }
    }
}
