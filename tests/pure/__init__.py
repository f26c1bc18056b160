"""Pure tier: policy, parsers and quantities; no I/O, no trio, no files."""
