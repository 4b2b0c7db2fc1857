/* The victim of periodic checkpoints (tests/tests/replicas.rs, `cargo xtask bench-cluster`):
 *   replica_counter DIR MIB KIB_PER_S MARKER
 * keeps MIB MiB of non-zero memory, each page beginning with MARKER and its number, and
 * every 10 ms counts one up and rewrites KIB_PER_S/100 KiB of that memory (in turn, page
 * after page). DIR/count holds "N T" (the count and CLOCK_REALTIME in ms), replaced
 * atomically each tick; DIR/ready appears once the memory is filled.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void put(const char *dir, const char *name, const char *text)
{
	char tmp[4096], path[4096];
	snprintf(tmp, sizeof(tmp), "%s/.%s.tmp", dir, name);
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	FILE *f = fopen(tmp, "w");
	if (!f)
		return;
	fputs(text, f);
	fclose(f);
	rename(tmp, path);
}

int main(int argc, char **argv)
{
	if (argc != 5) {
		fprintf(stderr, "usage: %s DIR MIB KIB_PER_S MARKER\n", argv[0]);
		return 2;
	}
	const char *dir = argv[1];
	size_t pages = (size_t)atol(argv[2]) * 256;
	size_t per_tick = (size_t)atol(argv[3]) / 4 / 100;
	const char *marker = argv[4];
	unsigned char *mem = malloc(pages * 4096);
	if (!mem)
		return 1;
	uint64_t x = 88172645463325252ull;
	for (size_t p = 0; p < pages; p++) {
		unsigned char *pg = mem + p * 4096;
		for (size_t i = 0; i < 4096; i += 8) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			memcpy(pg + i, &x, 8);
		}
		snprintf((char *)pg, 64, "%s page %zu", marker, p);
	}
	put(dir, "ready", "ready\n");
	unsigned long counter = 0;
	size_t next = 0;
	for (;;) {
		counter++;
		for (size_t k = 0; k < per_tick && pages; k++) {
			unsigned char *pg = mem + next * 4096;
			for (size_t i = 64; i < 4096; i += 64)
				pg[i] = (unsigned char)(counter + i);
			next = (next + 1) % pages;
		}
		char line[64];
		snprintf(line, sizeof(line), "%lu %llu\n", counter, (unsigned long long)now_ms());
		put(dir, "count", line);
		usleep(10000);
	}
}
