"""Thin wrappers over kernel interfaces, one module per interface.

Rules: each class owns its fd (trio's _unix_pipes pattern: notify_closing, then
close); errno becomes memguard.errors at this boundary; a vanished cgroup or
process is a normal result (None / False).
"""
