"""What attention says about a translation: word alignments and AER (alignment.py), heatmaps and
plots (viz.py). numpy only at import time: no torch, no matplotlib until something is drawn."""
