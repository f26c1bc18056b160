/* Idle processes for the race benchmark: a parent and COUNT sleeping children.
 *
 *     sleepers COUNT
 *
 * Waits for the go byte on stdin, forks COUNT children that sleep until killed,
 * prints "ready" once all are forked, and sleeps until killed itself. The
 * children do nothing else: they are the idle processes of a real container
 * (workers, shells, sidecars) that a container kill must reach too.
 */
#include "common.h"

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: sleepers COUNT\n");
		return 2;
	}
	long count = atol(argv[1]);
	wait_for_go();
	for (long index = 0; index < count; index++) {
		pid_t pid = fork();
		if (pid < 0)
			return 6;
		if (pid == 0)
			for (;;)
				pause();
	}
	printf("ready\n");
	fflush(stdout);
	for (;;)
		pause();
}
