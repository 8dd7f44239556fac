"""Applications built on the library: the offline quickstart (quickstart.py), building a vocabulary
shortlist from parallel text (shortlist.py)."""
