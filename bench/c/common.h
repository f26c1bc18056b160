/* Shared by the race benchmark's workloads: wait for the go byte, pace, touch pages.
 *
 * Every workload is started outside the container, moved into its cgroups by the
 * bench, and only then reads one byte from stdin and starts: nothing it allocates
 * is charged before it is inside.
 */
#ifndef RACE_COMMON_H
#define RACE_COMMON_H

#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define MIB (1024L * 1024L)

static inline int64_t now_ns(clockid_t clock)
{
	struct timespec ts;
	clock_gettime(clock, &ts);
	return (int64_t)ts.tv_sec * 1000000000L + ts.tv_nsec;
}

static inline void sleep_until_ns(int64_t due_ns)
{
	struct timespec ts = { .tv_sec = due_ns / 1000000000L, .tv_nsec = due_ns % 1000000000L };
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
		;
}

/* Block until the bench writes the go byte (it has moved us into the container). */
static inline void wait_for_go(void)
{
	char byte;
	ssize_t got;
	do
		got = read(STDIN_FILENO, &byte, 1);
	while (got < 0 && errno == EINTR);
	if (got != 1)
		exit(3); /* the bench went away before saying go */
}

/* Map one MiB and write one byte per page, so every page is faulted in and charged. */
static inline void touch_one_mib(long page_bytes)
{
	char *chunk = mmap(NULL, MIB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (chunk == MAP_FAILED)
		exit(4);
	for (long offset = 0; offset < MIB; offset += page_bytes)
		chunk[offset] = 1;
}

/* Allocate mib MiB one MiB at a time at rate_mib_s (0: as fast as pages can be touched). */
static inline void fill(long mib, double rate_mib_s)
{
	long page_bytes = sysconf(_SC_PAGESIZE);
	int64_t started_ns = now_ns(CLOCK_MONOTONIC);
	for (long index = 0; index < mib; index++) {
		touch_one_mib(page_bytes);
		if (rate_mib_s > 0)
			sleep_until_ns(started_ns + (int64_t)((index + 1) * 1e9 / rate_mib_s));
	}
}

#endif
