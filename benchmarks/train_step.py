"""Training-step throughput of one attnmt source tree: the loop of ``attnmt.train`` without validation,
on Multi30k en→de batches with Joey NMT's model size. For before/after comparisons of a change:

    git worktree add /tmp/before <commit>
    python benchmarks/train_step.py --src /tmp/before/src --threads 2
    python benchmarks/train_step.py --src src --threads 2

Prints target tokens/s (wall clock) for input feeding on and off, fp32 and bf16 autocast, and with
one thread also tokens per CPU-second, which other load on the machine barely changes.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pickle
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, multi30k_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", type=Path, default=REPO / "src", help="the attnmt source tree to measure")
    parser.add_argument("--data", type=Path, default=multi30k_dir(), help="Multi30k (default $ATTNMT_DATA/multi30k)")
    parser.add_argument("--precisions", default="fp32,bf16", help="fp32, bf16 or both (bf16 is slow where the CPU "
                                                                  "has no AVX-512 BF16 or AMX)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--batches", type=int, default=60, help="timed batches per setting (after 5 warm-up ones)")
    parser.add_argument("--batch-tokens", type=int, default=1024, help="1024: about 60 sentences, Joey's batch")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "attnmt-train-step")
    args = parser.parse_args()
    sys.path.insert(0, str(args.src.resolve()))

    import torch

    from attnmt.training import loop as training  # trees from d6aab0d on (the training/ package)
    from attnmt.training.prepare import prepare_data
    from attnmt.config import load_config
    from attnmt.data.batching import collate, token_batches
    from attnmt.model import Seq2Seq

    torch.set_num_threads(args.threads)
    overrides = [f"data.train={args.data}/train", f"data.valid={args.data}/val", "data.src_lang=en",
                 "data.trg_lang=de", "data.max_src_tokens=80", "data.max_trg_tokens=80",
                 "model.share_embeddings=true", "model.tie_output=false"]
    data_cache = args.work / "data.pkl"  # the same token ids for every source tree
    if not data_cache.exists():
        data = prepare_data(load_config(None, overrides), args.work / "tokenizer", log=lambda message: None)
        args.work.mkdir(parents=True, exist_ok=True)
        pairs = range(data.n_train_pairs)
        src, trg = [data.train.src(i).tolist() for i in pairs], [data.train.trg(i).tolist() for i in pairs]
        data_cache.write_bytes(pickle.dumps((src, trg, data.src_tokenizer.vocab_size)))
    src_ids, trg_ids, vocab_size = pickle.loads(data_cache.read_bytes())
    epoch = token_batches([len(s) for s in src_ids], [len(t) for t in trg_ids], args.batch_tokens, shuffle=True,
                          seed=1, epoch=0)
    batches = epoch[: args.batches + 5]
    print(f"{args.src}: {args.threads} threads, {len(src_ids) / len(epoch):.0f} sentences a batch")

    for input_feeding in (True, False):
        for precision in args.precisions.split(","):
            config = load_config(None, [*overrides, f"model.input_feeding={str(input_feeding).lower()}"])
            torch.manual_seed(0)
            model = Seq2Seq.from_config(config.model, vocab_size, vocab_size)
            optimizer = training.build_optimizer(model, config.train)
            tokens, wall, cpu = 0, 0.0, 0.0
            for number, indices in enumerate(batches):
                batch = collate([src_ids[i] for i in indices], [trg_ids[i] for i in indices], indices)
                wall_start, cpu_start = time.perf_counter(), time.process_time()
                model.train()
                with torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext():
                    loss = training.batch_loss(model, batch, config.train.label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                (loss.float() / batch.n_trg_tokens).backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.train.clip_grad_norm)
                optimizer.step()
                if number >= 5:  # warm-up: first calls allocate and pick kernels
                    wall += time.perf_counter() - wall_start
                    cpu += time.process_time() - cpu_start
                    tokens += batch.n_trg_tokens
            per_cpu_second = f", {tokens / cpu:.0f} per CPU-second" if args.threads == 1 else ""
            print(f"  input feeding {'on ' if input_feeding else 'off'} {precision}: "
                  f"{tokens / wall:.0f} target tokens/s{per_cpu_second}", flush=True)


if __name__ == "__main__":
    main()
