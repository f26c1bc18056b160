"""Memory QoS classes: applying cgroup v2 memory settings from pod annotations."""
