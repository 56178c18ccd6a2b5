"""Generated wire code; see protos/generate.py."""
