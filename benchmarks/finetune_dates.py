"""Fine-tuning on the built-in dates task: a model that never saw Italian learns it from a few hundred
Italian dates (``attnmt train --init-from``), and what it forgets of the other languages meanwhile.

    python benchmarks/finetune_dates.py                  # about 3 minutes on 2 cores

1. The quickstart's corpus without Italian (the other eight locales) trains the quickstart's model
   for ``--base-seconds``: the base model.
2. A few hundred Italian dates (``--italian-pairs``), none of them a test date, fine-tune it for
   ``--tune-steps`` steps: ``attnmt train tune.yaml --model-dir tuned --init-from base``, with the
   quickstart's training settings but a lower learning rate and no warm-up.
3. Exact match of both models on held-out Italian dates and on held-out dates of the other languages.

Writes ``--out`` (default docs/results/finetune_dates.json) with the commands and the figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import time
from pathlib import Path

from common import REPO, RESULTS, attnmt_command, command_line, machine, write_json

from attnmt.apps.quickstart import quickstart_config
from attnmt.data.corpus import read_lines
from attnmt.datasets.dates import DEFAULT_LOCALES, write_corpus
from attnmt.evaluate import exact_match
from attnmt.translator import Translator

HELD_OUT = "it"


def run(command: list[str]) -> float:
    """Run an attnmt command; its wall-clock seconds."""
    started = time.perf_counter()
    completed = subprocess.run(attnmt_command(*command), capture_output=True, text=True)
    if completed.returncode != 0:
        raise SystemExit(f"attnmt {' '.join(command)} failed:\n{completed.stderr[-3000:]}")
    return time.perf_counter() - started


def accuracy(model_dir: Path, prefix: Path) -> float:
    sources, references = read_lines(f"{prefix}.src"), read_lines(f"{prefix}.trg")
    outputs = [t.text for t in Translator.load(model_dir).translate(sources, beam=1)]
    return round(100 * exact_match(outputs, references), 2)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "finetune_dates")
    parser.add_argument("--out", type=Path, default=RESULTS / "finetune_dates.json")
    parser.add_argument("--base-seconds", type=float, default=90.0, help="training time of the base model")
    parser.add_argument("--italian-pairs", type=int, default=300)
    parser.add_argument("--tune-steps", type=int, default=150)
    parser.add_argument("--tune-learning-rate", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)

    others = tuple(locale for locale in DEFAULT_LOCALES if locale != HELD_OUT)
    # The same seed and split sizes give both corpora the same held-out dates: no Italian training
    # date is a test date of either.
    base_data = write_corpus(args.work / "base_data", 20_000, 500, 1_000, args.seed, locales=others)
    italian = write_corpus(args.work / "italian_data", args.italian_pairs, 100, 1_000, args.seed, locales=(HELD_OUT,))
    base_config = quickstart_config(args.work / "base_data", args.seed, args.base_seconds)
    base_config.save(args.work / "base.yaml")
    tune = dataclasses.replace(
        base_config,
        data=dataclasses.replace(base_config.data, train=str(italian["train"]), valid=str(italian["valid"]),
                                 test=str(italian["test"])),
        train=dataclasses.replace(base_config.train, max_time=0.0, max_steps=args.tune_steps,
                                  learning_rate=args.tune_learning_rate, schedule="constant",
                                  batch_tokens=500, valid_every=50, log_every=25),
    )
    tune.save(args.work / "tune.yaml")

    base_dir, tuned_dir = args.work / "base", args.work / "tuned"
    commands = {
        "base": ["train", str(args.work / "base.yaml"), "--model-dir", str(base_dir), "--overwrite", "--no-progress"],
        "tune": ["train", str(args.work / "tune.yaml"), "--model-dir", str(tuned_dir), "--init-from", str(base_dir),
                 "--overwrite", "--no-progress"],
    }
    seconds = {name: round(run(command), 1) for name, command in commands.items()}
    result = {
        "machine": machine(),
        "command": command_line("finetune_dates.py", argv),
        "commands": {name: "attnmt " + " ".join(command) for name, command in commands.items()},
        "held_out_locale": HELD_OUT,
        "other_locales": list(others),
        "italian_pairs": args.italian_pairs,
        "tune_steps": args.tune_steps,
        "seconds": seconds,
        "exact_match": {
            model: {"italian": accuracy(model_dir, italian["test"]), "other_languages": accuracy(model_dir, base_data["test"])}
            for model, model_dir in (("base", base_dir), ("fine-tuned", tuned_dir))
        },
    }
    write_json(args.out, result)
    print(result)


if __name__ == "__main__":
    main()
