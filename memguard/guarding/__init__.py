"""Finding containers and guarding each one: discovery, the supervisor, one guard
per cgroup, the actions (flush, kill) a guard carries out, the agent."""
