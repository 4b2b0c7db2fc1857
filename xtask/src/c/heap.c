/* The bench's victim: maps SIZE_MIB of anonymous memory, fills every page with content that looks
 * like a language runtime's heap (small objects: refcounts, type pointers, pointers to nearby
 * objects, small integers, short strings, some random bytes), writes zeros into a quarter of the
 * pages so that they are resident too, then prints "ready ADDR LEN" and idles.
 * On SIGUSR1 it checksums the memory again and writes "ok" or "bad" into REPORT.
 * Usage: heap SIZE_MIB REPORT [EMIT]   (EMIT: also write the memory into this file, then exit) */
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint64_t next(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static const char *words[] = {
    "id", "name", "user", "value", "request", "response", "status", "count", "items",
    "config", "path", "error", "timeout", "session", "token", "created_at", "updated_at",
    "message", "header", "content-type", "application/json", "localhost", "default", "true",
    "false", "None", "__init__", "__dict__", "self", "args", "kwargs", "result", "index",
    "key", "data", "buffer", "offset", "length", "utf-8", "GET", "POST", "/api/v1/jobs",
};
#define NWORDS (sizeof(words) / sizeof(words[0]))

/* A few "type objects" every object points to, as in a real heap. */
static const uint64_t types[] = {
    0x55d0c0a01e40, 0x55d0c0a02260, 0x55d0c0a02680, 0x55d0c0a03aa0,
    0x55d0c0a04ec0, 0x55d0c0a052e0, 0x55d0c0a06700, 0x55d0c0a07b20,
};

static void put64(uint8_t *p, size_t *off, uint64_t v) {
    if (*off + 8 <= PAGE) memcpy(p + *off, &v, 8);
    *off += 8;
}

/* Objects come in runs of the same kind, as when a program builds a list of records in a loop:
 * same type, refcount 1, a pointer to the next object, a counter, the same key string, and now
 * and then a random word (a hash, a float, an id): about 5% of the bytes are random. */
static void fill_page(uint8_t *p, uint64_t base) {
    if (next() % 4 == 0) {
        memset(p, 0, PAGE); /* zero, but written: resident */
        return;
    }
    size_t off = 0;
    while (off < PAGE) {
        uint64_t r = next();
        uint64_t type = types[r % 8];
        const char *w = words[(r >> 8) % NWORDS];
        size_t wlen = strlen(w), wpad = (wlen + 8) & ~7ull;
        int kind = (r >> 16) % 3, run = 4 + (r >> 24) % 29;
        uint64_t counter = (r >> 32) % 1000;
        for (int i = 0; i < run && off < PAGE; i++) {
            uint64_t here = base + off;
            put64(p, &off, next() % 8 ? 1 : 2);       /* refcount */
            put64(p, &off, type);                     /* type pointer */
            if (kind == 0) {                          /* list node: next, value */
                put64(p, &off, here + 32);
                put64(p, &off, counter++);
            } else if (kind == 1) {                   /* record: key string, value, parent */
                put64(p, &off, wlen);
                if (off + wpad <= PAGE) {
                    memset(p + off, 0, wpad);
                    memcpy(p + off, w, wlen);
                }
                off += wpad;
                put64(p, &off, counter++);
                put64(p, &off, base);
            } else {                                  /* boxed small integers */
                put64(p, &off, counter++ % 256);
                put64(p, &off, 0);
            }
            if (next() % 3 == 0) put64(p, &off, next()); /* hash, float or id */
        }
    }
}

static uint64_t checksum(const uint8_t *mem, size_t len) {
    uint64_t h = 1469598103934665603ull;
    const uint64_t *w = (const uint64_t *)mem;
    for (size_t i = 0; i < len / 8; i++) h = (h ^ w[i]) * 1099511628211ull;
    return h;
}

static volatile sig_atomic_t check_requested;

static void on_usr1(int sig) {
    (void)sig;
    check_requested = 1;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: heap SIZE_MIB REPORT [EMIT]\n");
        return 2;
    }
    size_t len = (size_t)strtoul(argv[1], NULL, 10) << 20;
    uint8_t *mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    for (size_t off = 0; off < len; off += PAGE) fill_page(mem + off, (uint64_t)(uintptr_t)mem + off);
    uint64_t sum = checksum(mem, len);

    if (argc > 3) {
        int fd = open(argv[3], O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0 || write(fd, mem, len) != (ssize_t)len) {
            perror("emit");
            return 1;
        }
        close(fd);
        return 0;
    }

    struct sigaction sa = {0};
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    printf("ready %lx %zu\n", (unsigned long)(uintptr_t)mem, len);
    fflush(stdout);

    struct timespec tick = {0, 20 * 1000 * 1000};
    for (;;) {
        nanosleep(&tick, NULL);
        if (check_requested) {
            check_requested = 0;
            int fd = open(argv[2], O_WRONLY | O_CREAT | O_TRUNC, 0644);
            if (fd >= 0) {
                dprintf(fd, checksum(mem, len) == sum ? "ok\n" : "bad\n");
                close(fd);
            }
        }
    }
}
