"""Applications built on the library: the offline quickstart (quickstart.py)."""
