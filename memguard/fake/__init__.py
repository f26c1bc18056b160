"""A fake cgroupfs for demos and tests: real files, real processes, no kernel."""
