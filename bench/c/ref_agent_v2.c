/* The reference agent on cgroup v2: the floor for a notification-driven agent there.
 *
 *     ref_agent_v2 CGROUP THRESHOLD_BYTES BOUND_MS
 *
 * cgroup v2 has no usage-threshold eventfd. The one notification that comes
 * before the limit is the memory.high tripwire: with memory.high at the
 * threshold the kernel counts `high` events in memory.events (and throttles the
 * allocator from there on), and inotify reports the file's IN_MODIFY. So: write
 * THRESHOLD_BYTES to memory.high, watch memory.events, print "armed"; on the
 * first modification write 1 to cgroup.kill (the kernel SIGKILLs every task,
 * forks in flight included), wait until cgroup.procs is empty or BOUND_MS have
 * passed, print one line and exit:
 *
 *     woke=events wake_ns=N first_kill_ns=N first_kill_wall_ns=N signals=1 rounds=N
 *     empty=0|1
 *
 * wake_ns is CLOCK_MONOTONIC right after poll(2) returned (before the inotify
 * fd is read), first_kill_ns right before the write to cgroup.kill.
 */
#include "common.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <string.h>
#include <sys/inotify.h>

static void write_file(const char *cgroup, const char *name, const char *value)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/%s", cgroup, name);
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0 || write(fd, value, strlen(value)) != (ssize_t)strlen(value)) {
		perror(path);
		exit(7);
	}
	close(fd);
}

/* cgroup.procs holds no pid (or the cgroup is gone). */
static int is_empty(const char *cgroup)
{
	char path[4096], byte;
	snprintf(path, sizeof(path), "%s/cgroup.procs", cgroup);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 1;
	ssize_t got = read(fd, &byte, 1);
	close(fd);
	return got <= 0;
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: ref_agent_v2 CGROUP THRESHOLD_BYTES BOUND_MS\n");
		return 2;
	}
	const char *cgroup = argv[1];
	int64_t bound_ns = atol(argv[3]) * 1000000L;
	char path[4096];
	snprintf(path, sizeof(path), "%s/cgroup.kill", cgroup);
	int kill_fd = open(path, O_WRONLY | O_CLOEXEC);
	int inotify_fd = inotify_init1(IN_CLOEXEC);
	snprintf(path, sizeof(path), "%s/memory.events", cgroup);
	if (kill_fd < 0 || inotify_fd < 0 || inotify_add_watch(inotify_fd, path, IN_MODIFY) < 0) {
		perror(cgroup);
		return 7;
	}
	write_file(cgroup, "memory.high", argv[2]);
	printf("armed\n");
	fflush(stdout);
	struct pollfd watched = { .fd = inotify_fd, .events = POLLIN };
	while (poll(&watched, 1, -1) < 0)
		if (errno != EINTR)
			return 8;
	int64_t wake_ns = now_ns(CLOCK_MONOTONIC);
	char events[4096];
	if (read(inotify_fd, events, sizeof(events)) < 0)
		return 8;
	int64_t first_kill_ns = now_ns(CLOCK_MONOTONIC);
	int killed = write(kill_fd, "1", 1) == 1;
	int64_t first_kill_wall_ns = now_ns(CLOCK_REALTIME);
	long rounds = 0;
	int empty;
	while (!(empty = is_empty(cgroup)) && now_ns(CLOCK_MONOTONIC) < wake_ns + bound_ns) {
		rounds++;
		sched_yield(); /* the killed need the CPU to exit */
	}
	printf("woke=events wake_ns=%lld first_kill_ns=%lld first_kill_wall_ns=%lld signals=%d "
	       "rounds=%ld empty=%d\n",
	       (long long)wake_ns, killed ? (long long)first_kill_ns : 0LL,
	       killed ? (long long)first_kill_wall_ns : 0LL, killed, rounds, empty);
	return 0;
}
