"""The command line and the one composition root."""
