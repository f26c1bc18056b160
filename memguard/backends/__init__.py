"""Turning kernel signals into wake-ups and snapshots: one backend per cgroup flavour."""
