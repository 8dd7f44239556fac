"""What attention says about a translation: word alignments and AER (alignment.py), warnings about
omissions and repetitions (diagnostics.py), heatmaps and plots (viz.py). numpy only at import time:
no torch, no matplotlib until something is drawn."""
