"""Finding containers and guarding each one: discovery, the supervisor, one guard
per cgroup, what a guard carries out (flush, kill, graceful tries), the agent."""
