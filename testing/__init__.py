"""Helpers shared by tests/ and bench/: agents, real cgroups and hogs, agent
processes, the Kubernetes API-server emulator, the v2 test VM, bounded waits.

Not part of memguard (the wheel ships memguard* only) and never imported by it;
bench/ imports this package, never tests/.
"""
