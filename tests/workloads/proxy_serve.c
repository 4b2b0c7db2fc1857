/* A server that reads a PROXY protocol v1 header: listens on 0.0.0.0 (port 0), prints
 * "listen PORT" and "ready". Each connection may start with "PROXY TCP4|TCP6|UNKNOWN ...\r\n";
 * then one line LINE, answered "LINE from IP:PORT to IP:PORT\n" with the client and server
 * the header named, or "LINE from IP:PORT direct\n" (getpeername) without a header; a
 * malformed header is answered "BAD header ...\n". One connection at a time. Stdin "exit N"
 * exits with N. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void say(const char *s) { (void)!write(1, s, strlen(s)); }

/* Reads one line ending in "\n" (at most n-1 bytes) byte by byte: nothing beyond it is taken. */
static int read_line(int fd, char *buf, size_t n) {
    size_t k = 0;
    while (k + 1 < n) {
        ssize_t r = read(fd, buf + k, 1);
        if (r <= 0) return -1;
        if (buf[k++] == '\n') break;
    }
    buf[k] = 0;
    return (int)k;
}

static void serve(int c) {
    char first[256], line[256], reply[700];
    if (read_line(c, first, sizeof first) < 0) return;
    const char *body = first;
    char from[128] = "", to[128] = "";
    if (strncmp(first, "PROXY ", 6) == 0) {
        char fam[16], src[64], dst[64];
        unsigned sport, dport;
        if (strcmp(first, "PROXY UNKNOWN\r\n") == 0) {
            snprintf(from, sizeof from, "unknown");
            snprintf(to, sizeof to, "unknown");
        } else if (strlen(first) < 2 || first[strlen(first) - 2] != '\r' ||
                   sscanf(first, "PROXY %15s %63s %63s %u %u", fam, src, dst, &sport, &dport) != 5 ||
                   (strcmp(fam, "TCP4") && strcmp(fam, "TCP6")) || sport > 65535 || dport > 65535) {
            snprintf(reply, sizeof reply, "BAD header %s", first);
            (void)!write(c, reply, strlen(reply));
            return;
        } else {
            snprintf(from, sizeof from, "%s:%u", src, sport);
            snprintf(to, sizeof to, "%s:%u", dst, dport);
        }
        if (read_line(c, line, sizeof line) < 0) return;
        body = line;
    }
    char text[256];
    snprintf(text, sizeof text, "%s", body);
    text[strcspn(text, "\r\n")] = 0;
    if (from[0]) {
        snprintf(reply, sizeof reply, "%s from %s to %s\n", text, from, to);
    } else {
        struct sockaddr_in6 peer;
        socklen_t len = sizeof peer;
        char ip[INET6_ADDRSTRLEN] = "?";
        unsigned port = 0;
        if (getpeername(c, (struct sockaddr *)&peer, &len) == 0) {
            if (peer.sin6_family == AF_INET) {
                struct sockaddr_in *p4 = (struct sockaddr_in *)&peer;
                inet_ntop(AF_INET, &p4->sin_addr, ip, sizeof ip);
                port = ntohs(p4->sin_port);
            } else {
                inet_ntop(AF_INET6, &peer.sin6_addr, ip, sizeof ip);
                port = ntohs(peer.sin6_port);
            }
        }
        snprintf(reply, sizeof reply, "%s from %s:%u direct\n", text, ip, port);
    }
    (void)!write(c, reply, strlen(reply));
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    struct sockaddr_in any = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_ANY)};
    int lst = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lst, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (lst < 0 || bind(lst, (struct sockaddr *)&any, sizeof any) || listen(lst, 64)) {
        perror("listen");
        return 1;
    }
    socklen_t len = sizeof any;
    getsockname(lst, (struct sockaddr *)&any, &len);
    char msg[64];
    snprintf(msg, sizeof msg, "listen %u\nready\n", ntohs(any.sin_port));
    say(msg);
    for (;;) {
        struct pollfd p[2] = {{.fd = lst, .events = POLLIN}, {.fd = 0, .events = POLLIN}};
        if (poll(p, 2, -1) < 0) continue;
        if (p[1].revents) {
            char line[64];
            if (read_line(0, line, sizeof line) < 0) return 0;
            if (strncmp(line, "exit ", 5) == 0) return atoi(line + 5);
        }
        if (p[0].revents & POLLIN) {
            int c = accept4(lst, NULL, NULL, SOCK_CLOEXEC);
            if (c < 0) continue;
            serve(c);
            close(c);
        }
    }
}
