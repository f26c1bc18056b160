/* The reference agent: the floor for any agent driven by cgroup v1 notifications.
 *
 *     ref_agent MEMORY_CGROUP THRESHOLD_BYTES BOUND_MS
 *
 * One eventfd on memory.usage_in_bytes at THRESHOLD_BYTES (the bench passes the
 * threshold memguard computes for the same limit) and one on memory.oom_control,
 * both registered through cgroup.event_control. Prints "armed" when both are
 * registered, then blocks in poll(2). On the first wake it SIGKILLs every pid in
 * cgroup.procs, reading it again and again until it is empty or BOUND_MS have
 * passed, prints one line of results and exits:
 *
 *     woke=threshold|oom wake_ns=N first_kill_ns=N first_kill_wall_ns=N signals=N
 *     rounds=N empty=0|1
 *
 * wake_ns is CLOCK_MONOTONIC right after poll(2) returned (before the eventfd is
 * read); first_kill_ns right before the first kill(2) - the same two points
 * memguard's report measures latency_s between; first_kill_wall_ns is
 * CLOCK_REALTIME just after (0 when nothing was killed). Nothing else happens on the kill
 * path: no usage read, no /proc, no allocation.
 */
#include "common.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/eventfd.h>

#define PROCS_BUFFER_BYTES (1 << 20)

static char procs_text[PROCS_BUFFER_BYTES];

static int open_in(const char *cgroup, const char *name, int flags)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/%s", cgroup, name);
	int fd = open(path, flags | O_CLOEXEC);
	if (fd < 0) {
		perror(path);
		exit(7);
	}
	return fd;
}

/* An eventfd registered on cgroup/watched with argument ("" or " <bytes>"). */
static int register_event(const char *cgroup, const char *watched, const char *argument)
{
	int efd = eventfd(0, EFD_CLOEXEC);
	int watched_fd = open_in(cgroup, watched, O_RDONLY);
	int control_fd = open_in(cgroup, "cgroup.event_control", O_WRONLY);
	char line[128];
	int length = snprintf(line, sizeof(line), "%d %d%s", efd, watched_fd, argument);
	if (efd < 0 || write(control_fd, line, length) != length) {
		perror("cgroup.event_control");
		exit(7);
	}
	close(control_fd);
	close(watched_fd);
	return efd;
}

/* cgroup.procs read whole from fd (then closed); its length, or -1 when the cgroup is gone.
 *
 * Kernel fact (6.18, cgroup v1): a kept-open cgroup.procs fd read again after
 * lseek(0) may return the pidlist the kernel cached at the previous read: the
 * cache lives until 1 s after its last use, so a loop re-reading one fd can see
 * the same dead pids for ever. The first round reads an fd opened at start
 * (nothing cached yet: no open(2) on the kill path); later rounds open anew.
 */
static ssize_t read_procs(int procs_fd)
{
	if (procs_fd < 0)
		return -1;
	ssize_t total = 0, got;
	while ((got = read(procs_fd, procs_text + total, sizeof(procs_text) - 1 - total)) > 0)
		total += got;
	close(procs_fd);
	if (got < 0)
		return -1;
	procs_text[total] = '\0';
	return total;
}

static int open_procs(const char *cgroup)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/cgroup.procs", cgroup);
	return open(path, O_RDONLY | O_CLOEXEC);
}

struct kills {
	int64_t first_kill_ns;
	int64_t first_kill_wall_ns;
	long signals;
	long rounds;
	int empty;
};

/* SIGKILL every pid in cgroup.procs, again and again, until it is empty or the deadline. */
static void kill_all(const char *cgroup, int first_fd, int64_t deadline_ns, struct kills *kills)
{
	for (;;) {
		int procs_fd = kills->rounds ? open_procs(cgroup) : first_fd;
		ssize_t length = read_procs(procs_fd);
		if (length <= 0) {
			kills->empty = 1;
			return;
		}
		kills->rounds++;
		for (char *cursor = procs_text; *cursor;) {
			long pid = strtol(cursor, &cursor, 10);
			if (pid <= 0)
				break;
			int first = kills->first_kill_ns == 0;
			if (first)
				kills->first_kill_ns = now_ns(CLOCK_MONOTONIC);
			kill((pid_t)pid, SIGKILL);
			if (first)
				kills->first_kill_wall_ns = now_ns(CLOCK_REALTIME);
			kills->signals++;
		}
		if (now_ns(CLOCK_MONOTONIC) >= deadline_ns)
			return;
		sched_yield(); /* the killed need the CPU to exit */
	}
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: ref_agent MEMORY_CGROUP THRESHOLD_BYTES BOUND_MS\n");
		return 2;
	}
	const char *cgroup = argv[1];
	char argument[32];
	snprintf(argument, sizeof(argument), " %lld", atoll(argv[2]));
	int64_t bound_ns = atol(argv[3]) * 1000000L;
	struct pollfd fds[2] = {
		{ .fd = register_event(cgroup, "memory.usage_in_bytes", argument), .events = POLLIN },
		{ .fd = register_event(cgroup, "memory.oom_control", ""), .events = POLLIN },
	};
	int first_fd = open_procs(cgroup);
	printf("armed\n");
	fflush(stdout);
	while (poll(fds, 2, -1) < 0)
		if (errno != EINTR)
			return 8;
	int64_t wake_ns = now_ns(CLOCK_MONOTONIC);
	const char *woke = (fds[0].revents & POLLIN) ? "threshold" : "oom";
	uint64_t counter;
	if (read(fds[(fds[0].revents & POLLIN) ? 0 : 1].fd, &counter, sizeof(counter)) < 0)
		return 8;
	struct kills kills = { 0 };
	kill_all(cgroup, first_fd, wake_ns + bound_ns, &kills);
	printf("woke=%s wake_ns=%lld first_kill_ns=%lld first_kill_wall_ns=%lld signals=%ld "
	       "rounds=%ld empty=%d\n",
	       woke, (long long)wake_ns, (long long)kills.first_kill_ns,
	       (long long)kills.first_kill_wall_ns, kills.signals, kills.rounds, kills.empty);
	return 0;
}
