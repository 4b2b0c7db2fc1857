/* Shared by the fanotify victims: the "fanotify …" lines of a descriptor's fdinfo (init flags,
 * event flags and every mark with its inode, handle, mount id or device, masks and flags). */
#include <stdio.h>
#include <string.h>

static void fan_fdinfo(int fd, char *out, size_t len)
{
	char p[64], line[1024];
	snprintf(p, sizeof(p), "/proc/self/fdinfo/%d", fd);
	FILE *f = fopen(p, "r");
	out[0] = 0;
	if (!f)
		return;
	size_t used = 0;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, "fanotify ", 9) && used + strlen(line) < len) {
			strcpy(out + used, line);
			used += strlen(line);
		}
	fclose(f);
}
