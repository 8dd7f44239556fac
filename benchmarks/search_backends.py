"""Decoding speed of whichever attnmt comes first on sys.path, so that two trees of the search code
can be compared one after the other on one model (first asked for the array-API search: did
searching on torch tensors or numpy arrays slow the PyTorch path? then for the search bookkeeping
moved to numpy on the host; then for the shortlist's log-probabilities over its own columns only,
``--shortlist``):

    PYTHONPATH=/tmp/before/src python benchmarks/search_backends.py MODEL --label before >> out.jsonl
    python benchmarks/search_backends.py MODEL --label after >> out.jsonl

test_2016_flickr (source side): greedy and beam 5, in batches of 64 (1,000 sentences) and of one
sentence (the first 150), fp32, after a warm-up; one JSON line of sentences/s per run, with digests
of each setting's translations so that two trees can be shown to give the same output: ``_digest`` of
text, score and attention, ``_text_digest`` of the texts alone. Scores are hashed rounded to 5
decimals, so two runs whose scores differ in the 7th (a shortlist computes the output layer over
its own columns, summing in another order: 2e-7 seen on an Intel Xeon) can straddle a rounding
edge and differ in ``_digest`` while giving the same translations.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch
from common import multi30k_dir

import attnmt
from attnmt.data.corpus import read_lines
from attnmt.translator import Translator


def digest(translations, numbers: bool = True) -> str:
    """A short hash of the translations' texts and, with ``numbers``, their scores and attention
    matrices (scores to 5 decimals, attention to 4), equal for two runs that give the same output."""
    content = hashlib.sha1()
    for translation in translations:
        line = f"{translation.text}\t{translation.score:.5f}\n" if numbers else f"{translation.text}\n"
        content.update(line.encode())
        if numbers and translation.attention is not None:
            content.update(np.round(translation.attention, 4).tobytes())
    return content.hexdigest()[:12]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--label", default="")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data", type=Path, default=multi30k_dir())
    parser.add_argument("--shortlist", action="store_true", help="decode with the model's shortlist (attnmt shortlist)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    translator = Translator.load(args.model_dir, shortlist=args.shortlist)
    sources = read_lines(args.data / f"test_2016_flickr.{translator.config.data.src_lang}.gz")
    row = {"label": args.label, "attnmt": attnmt.__file__, "shortlist": args.shortlist}
    for beam, batch_size, count in ((1, 64, 1000), (5, 64, 1000), (1, 1, 150), (5, 1, 150)):
        translator.config.decode.batch_size = batch_size
        translator.translate(sources[:16], beam=beam)
        started = time.perf_counter()
        translations = translator.translate(sources[:count], beam=beam)
        row[f"beam{beam}_batch{batch_size}"] = round(count / (time.perf_counter() - started), 1)
        row[f"beam{beam}_batch{batch_size}_digest"] = digest(translations)
        row[f"beam{beam}_batch{batch_size}_text_digest"] = digest(translations, numbers=False)
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
