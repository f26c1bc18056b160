/* A bounded fork bomb for the race benchmark.
 *
 *     forkbomb RATE_MIB_S CHILD_MIB FORK_INTERVAL_MS LIFETIME_S
 *
 * Waits for the go byte on stdin. Then every process of the bomb (the first one
 * included) allocates and touches CHILD_MIB MiB at RATE_MIB_S (0: as fast as it
 * can) and forks again every FORK_INTERVAL_MS; every child does the same, so the
 * count doubles every interval until the memory limit (or a killer) stops it.
 *
 * Bounds, so that a bomb nobody stops still ends: no process forks after
 * LIFETIME_S from the go byte, and every process exits at that deadline. A
 * failed fork (pids.max) is skipped, not retried in a loop. Children stay in the
 * cgroup they were forked in (nothing here moves a process); the bench also
 * freezes and kills the whole cgroup after every trial.
 */
#include "common.h"

static void bomb(long child_mib, double rate_mib_s, int64_t interval_ns, int64_t deadline_ns)
{
	for (;;) {
		fill(child_mib, rate_mib_s);
		int64_t next_ns = now_ns(CLOCK_MONOTONIC) + interval_ns;
		for (;;) {
			if (next_ns >= deadline_ns) {
				sleep_until_ns(deadline_ns);
				exit(0);
			}
			sleep_until_ns(next_ns);
			next_ns += interval_ns;
			pid_t pid = fork();
			if (pid == 0)
				break; /* the child allocates its own share, then forks in turn */
		}
	}
}

int main(int argc, char **argv)
{
	if (argc != 5) {
		fprintf(stderr, "usage: forkbomb RATE_MIB_S CHILD_MIB FORK_INTERVAL_MS LIFETIME_S\n");
		return 2;
	}
	double rate_mib_s = atof(argv[1]);
	long child_mib = atol(argv[2]);
	int64_t interval_ns = atol(argv[3]) * 1000000L;
	int64_t lifetime_ns = (int64_t)(atof(argv[4]) * 1e9);
	wait_for_go();
	bomb(child_mib, rate_mib_s, interval_ns, now_ns(CLOCK_MONOTONIC) + lifetime_ns);
	return 0;
}
