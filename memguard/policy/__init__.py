"""The pure policy core.

Rules (h11's): this package contains no I/O whatsoever - no trio, no files, no
clock. Functions take frozen dataclasses and `now_s` and return frozen
dataclasses; the guard (an I/O shell) executes what they decide.
"""
