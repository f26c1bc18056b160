/* The race benchmark's memory hog.
 *
 *     hog RATE_MIB_S TARGET_MIB [CACHE_MIB CACHE_FILE]
 *
 * Waits for the go byte on stdin, then (with CACHE_MIB) writes CACHE_MIB MiB to
 * CACHE_FILE and fsyncs it (clean page cache, charged to our cgroup), then
 * allocates and touches TARGET_MIB MiB of anonymous memory in 1 MiB chunks at
 * RATE_MIB_S (0: as fast as this CPU touches pages), keeps it, prints
 * "filled <TARGET_MIB> MiB in <ns> ns" and sleeps until killed (the bench
 * measures the top rate this way, with no limit; in a race it never gets there).
 */
#include "common.h"

#include <fcntl.h>
#include <string.h>

static void write_cache(long mib, const char *path)
{
	static char buffer[MIB];
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		exit(5);
	memset(buffer, 'c', sizeof(buffer));
	for (long index = 0; index < mib; index++)
		if (write(fd, buffer, sizeof(buffer)) != (ssize_t)sizeof(buffer))
			exit(5);
	if (fsync(fd) != 0 || close(fd) != 0)
		exit(5);
}

int main(int argc, char **argv)
{
	if (argc != 3 && argc != 5) {
		fprintf(stderr, "usage: hog RATE_MIB_S TARGET_MIB [CACHE_MIB CACHE_FILE]\n");
		return 2;
	}
	double rate_mib_s = atof(argv[1]);
	long target_mib = atol(argv[2]);
	wait_for_go();
	if (argc == 5)
		write_cache(atol(argv[3]), argv[4]);
	int64_t started_ns = now_ns(CLOCK_MONOTONIC);
	fill(target_mib, rate_mib_s);
	long long filled_ns = now_ns(CLOCK_MONOTONIC) - started_ns;
	printf("filled %ld MiB in %lld ns\n", target_mib, filled_ns);
	fflush(stdout);
	for (;;)
		pause();
}
