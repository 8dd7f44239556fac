"""``attnmt`` and its subcommands. Thin: parse arguments, then call the modules that do the work,
imported only when a subcommand needs them so that ``attnmt --help`` is instant."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Iterator, TextIO


def _add_config_arguments(p: argparse.ArgumentParser, model_dir_help: str | None) -> None:
    """CONFIG, --set overrides, and (unless ``model_dir_help`` is None) --model-dir."""
    p.add_argument("config", type=Path, help="YAML config (see configs/)")
    if model_dir_help is not None:
        p.add_argument("--model-dir", "-m", type=Path, required=True, help=model_dir_help)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value, e.g. --set train.max_steps=1000 (repeatable)")


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model from a YAML config (under torchrun: on several processes)")
    _add_config_arguments(p, "where the model directory is written")
    p.add_argument("--resume", action="store_true", help="continue the run in --model-dir from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="start afresh even if --model-dir holds a model")
    p.add_argument("--init-from", type=Path, metavar="MODEL_DIR",
                   help="fine-tune: start from this model's weights and tokenizers (its architecture and vocabulary; "
                        "a config that contradicts them is an error), with a fresh optimizer and schedule")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=_run_train)


def _add_prepare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare", help="train the tokenizers and write the token store of a config's training data, "
                                       "ahead of training (e.g. once before a multi-node run)")
    _add_config_arguments(p, "the model directory training will use")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=_run_prepare)


def _add_eflomal(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eflomal", help="word alignments of a config's training data by eflomal (both directions, "
                                       "grow-diag-final-and), for train.guided_alignment")
    _add_config_arguments(p, None)
    p.add_argument("--out", "-o", type=Path, required=True, help="Pharaoh file, one line per training line")
    p.add_argument("--extra-src", type=Path, help="more source sentences to align together with the training data")
    p.add_argument("--extra-trg", type=Path, help="their translations")
    p.add_argument("--extra-out", type=Path, help="where the alignments of the extra sentences go")
    p.set_defaults(run=_run_eflomal)


def _add_average(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("average", help="average checkpoints of a model (train.keep_checkpoints) into a new model")
    p.add_argument("sources", type=Path, nargs="+", metavar="SOURCE",
                   help="a model directory (its kept checkpoints, else its best weights) or a weights file")
    p.add_argument("--out", "-o", type=Path, required=True, help="the model directory to write")
    p.add_argument("--last", type=int, default=0, help="only the last K kept checkpoints of each model directory")
    p.set_defaults(run=_run_average)


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write a model as ONNX graphs that translate without PyTorch (onnxruntime)")
    p.add_argument("model_dir", type=Path)
    p.add_argument("--onnx", type=Path, required=True, metavar="DIR",
                   help="the new directory: encoder.onnx, step.onnx, config and tokenizers; "
                        "'attnmt translate DIR' then needs onnxruntime (pip install 'attnmt[onnx]'), not torch")
    p.set_defaults(run=_run_export)


def _add_translate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("translate", help="translate lines from a file or stdin, one output line per input line")
    p.add_argument("model_dir", type=Path, help="a model directory, or one written by 'attnmt export --onnx'")
    p.add_argument("--input", "-i", type=Path, help="input file (plain or .gz); default stdin")
    p.add_argument("--output", "-o", type=Path, help="output file; default stdout")
    _add_search_options(p)
    _add_precision_option(p)
    _add_ensemble_option(p)
    _add_shortlist_option(p)
    p.add_argument("--n-best", type=int, default=None,
                   help="with N > 1 each input line gives one line 'TEXT ||| SCORE ||| TEXT2 ||| SCORE2 ...' "
                        "(default: decode.n_best of the model's config); with --sampling, N samples")
    p.add_argument("--sampling", action="store_true",
                   help="draw translations from the model's distribution instead of searching (back-translation)")
    p.add_argument("--temperature", type=float, default=None, help="sampling: < 1 sharpens, > 1 flattens (default 1)")
    p.add_argument("--top-k", type=int, default=None, help="sampling: only from the K most probable tokens")
    p.add_argument("--top-p", type=float, default=None,
                   help="sampling: only from the most probable tokens holding P of the probability (nucleus)")
    p.add_argument("--seed", type=int, default=None, help="sampling: the same seed, the same samples (default 0)")
    p.add_argument("--encoding-errors", choices=["strict", "replace"], default="strict",
                   help="invalid UTF-8 in the input: stop with an error (strict) or replace it")
    p.add_argument("--diagnostics", type=Path, metavar="FILE",
                   help="also write what the attention says about each translation here: one JSON line per input "
                        "line (coverage of each source word, possible omissions and repetitions, entropy, </s> mass)")
    p.add_argument("--deletion-test", action="store_true",
                   help="with --diagnostics: also score each translation with each source word left out, and flag "
                        "as untranslated the word it most looks to have left out, if any (deletion gain plus attended "
                        "regret over 1 nat; one forced decoding per word)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (there is one only on a terminal)")
    p.set_defaults(run=_run_translate)


def _add_search_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--beam", type=int, default=None, help="beam size (1 = greedy); default from the model's config")
    p.add_argument("--length-penalty", type=float, default=None, help="GNMT length penalty alpha")
    p.add_argument("--coverage-penalty", type=float, default=None,
                   help="GNMT coverage penalty beta (beam search; default: decode.coverage_penalty, 0: off)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="sentences per decoding batch (default: decode.batch_size of the model's config)")


def _load_translator(model_dir: Path, args: argparse.Namespace, forced_decoding: bool = False,
                     ensemble: list[Path] | None = None, **options):
    """The model of ``model_dir`` with the decoding settings of the command line; an exported
    directory (``attnmt export --onnx``) is translated by onnxruntime, torch never imported.
    ``forced_decoding``: the command scores or aligns given translations (PyTorch models only).
    ``ensemble``: the models to decode with it, if not the command line's ``--ensemble``."""
    from attnmt.decoding import with_search
    from attnmt.export.onnx_model import OnnxTranslator, is_onnx_dir

    ensemble = getattr(args, "ensemble", []) if ensemble is None else ensemble
    threads = getattr(args, "threads", 0)
    if is_onnx_dir(model_dir):
        torch_only = {"forced decoding": forced_decoding,
                      "--ensemble": ensemble, "--shortlist": getattr(args, "shortlist", False),
                      "--precision": options.get("precision", "fp32") != "fp32",
                      "--device": options.get("device", "cpu") != "cpu"}
        given = [option for option, value in torch_only.items() if value]
        if given:
            raise SystemExit(f"attnmt {args.command}: {model_dir} is an exported (ONNX) model; only a PyTorch "
                             f"model directory supports {', '.join(given)}")
        translator = OnnxTranslator.load(model_dir, threads=threads)
    else:
        import torch

        from attnmt.translator import Translator

        if threads > 0:
            torch.set_num_threads(threads)
        translator = Translator.load(model_dir, ensemble=ensemble,
                                     shortlist=getattr(args, "shortlist", False), **options)
    translator.config.decode = with_search(translator.config.decode, batch_size=getattr(args, "batch_size", None),
                                           coverage_penalty=getattr(args, "coverage_penalty", None)).check()
    return translator


def _add_shortlist_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shortlist", action="store_true",
                   help="decode with the model's vocabulary shortlist (attnmt shortlist): a smaller output layer")


def _add_ensemble_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ensemble", type=Path, action="append", default=[], metavar="MODEL_DIR",
                   help="decode together with this model (repeatable): the mean of the models' log-probabilities; "
                        "the models must share their tokenizers")


def _add_precision_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--precision", choices=["fp32", "bf16", "int8"], default="fp32",
                   help="fp32 (default); bf16: matrix products in bfloat16 (CPUs with AVX-512 BF16, recent GPUs); "
                        "int8: int8 weights, CPU only (speed and BLEU: docs/performance.md)")


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="BLEU and chrF with sacreBLEU (of files of translations, or of models), "
                                        "overall or by source sentence length")
    p.add_argument("--ref", type=Path, required=True, help="reference translations, one per line")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--hyp", type=Path, action="append", help="translations to score, one per line (repeatable)")
    source.add_argument("--model", type=Path, action="append", help="a model directory: translate --src first "
                                                                      "(repeatable)")
    p.add_argument("--src", type=Path, help="source sentences (with --model or --by-length)")
    p.add_argument("--output", "-o", type=Path, help="with one --model: also write the translations here")
    p.add_argument("--lowercase", action="store_true", help="case-insensitive scores")
    p.add_argument("--tokenize", default="13a", help="sacreBLEU tokenizer (default 13a)")
    p.add_argument("--by-length", action="store_true",
                   help="also score each source-length bucket: a Markdown table, one column per system and metric")
    p.add_argument("--bucket-width", type=int, default=5, help="source words per length bucket (default 5)")
    p.add_argument("--min-bucket", type=int, default=20,
                   help="a bucket with fewer sentences joins the next longer one (default 20)")
    p.add_argument("--plot", type=Path, help="with --by-length: draw the scores by length here (PNG or SVG)")
    _add_search_options(p)
    _add_precision_option(p)
    _add_ensemble_option(p)
    _add_shortlist_option(p)
    p.set_defaults(run=_run_evaluate)


def _add_plot(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plot", help="draw the attention heatmaps of translated sentences, side by side")
    p.add_argument("model_dir", type=Path)
    p.add_argument("sentences", nargs="+", metavar="SENTENCE", help="source sentences: one heatmap each")
    p.add_argument("--output", "-o", type=Path, default=Path("attention.png"), help="PNG or SVG file")
    p.add_argument("--words", action="store_true", help="merge subword pieces into words")
    p.add_argument("--columns", type=int, default=None, help="heatmaps per row (default: up to 3)")
    _add_search_options(p)
    p.set_defaults(run=_run_plot)


def _add_align(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("align", help="word alignments from attention (Pharaoh i-j), scored with AER against gold")
    p.add_argument("model_dir", type=Path, nargs="?", help="a model directory: align --src with --trg by forced decoding")
    p.add_argument("--src", type=Path, help="source sentences, one per line, words separated by spaces")
    p.add_argument("--trg", type=Path, help="their translations, one per line")
    p.add_argument("--hyp", type=Path, help="instead of a model: alignments to score, one line of i-j links per pair")
    p.add_argument("--gold", type=Path, help="gold alignments (i-j sure, i-jp or ipj possible, from 0): print AER, "
                                             "precision and recall")
    p.add_argument("--output", "-o", type=Path,
                   help="write the alignments here (default: stdout, unless --gold is given)")
    p.add_argument("--by-deletion", action="store_true",
                   help="link by the attention times the drop in each target piece's log-probability when the source "
                        "word is left out, argmax both ways (the best reading on human gold, docs/attention.md; one "
                        "forced decoding per source word)")
    p.add_argument("--reverse-model", type=Path, metavar="DIR",
                   help="a model of the opposite direction (--trg to --src) read beside the first: each pair of "
                        "words scored by the product of the two models' scores, argmax both ways (with "
                        "--by-deletion: their attention times drop), as aligners symmetrise two directions")
    _add_ensemble_option(p)
    p.add_argument("--reverse-ensemble", type=Path, action="append", default=[], metavar="MODEL_DIR",
                   help="read together with --reverse-model (repeatable), as --ensemble with the first model")
    p.add_argument("--also", type=Path, action="append", default=[], metavar="DIR",
                   help="with --reverse-model: another model of the first model's direction (repeatable); each "
                        "reads every pair as the first does and their word scores are averaged, so that its "
                        "vocabulary may differ (another seed, other training text); the first model with its "
                        "--ensemble counts as one")
    p.add_argument("--reverse-also", type=Path, action="append", default=[], metavar="DIR",
                   help="another model of --reverse-model's direction (repeatable), as --also")
    p.set_defaults(run=_run_align)


def _add_score(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score", help="log-probabilities of given translations by forced decoding (or rescore "
                                     "translate --n-best output)")
    p.add_argument("model_dir", type=Path)
    p.add_argument("--src", type=Path, required=True, help="source sentences, one per line")
    p.add_argument("--trg", type=Path, help="their translations, one per line: each line gives 'LOG_PROB<TAB>"
                                            "PER_TOKEN<TAB>TOKENS' (TOKENS counts the target pieces and </s>)")
    p.add_argument("--n-best", type=Path, help="instead of --trg: translate --n-best output to rescore; each line "
                                                "gives its translations again, best first by this model's score "
                                                "(log-probability over the GNMT length penalty of decode.length_penalty; "
                                                "no coverage penalty)")
    p.add_argument("--alignment", action="store_true", help="with --trg: add each pair's word alignment (Pharaoh)")
    p.add_argument("--output", "-o", type=Path, help="output file; default stdout")
    p.add_argument("--batch-size", type=int, default=None, help="pairs per forced-decoding batch")
    _add_precision_option(p)
    _add_ensemble_option(p)
    p.set_defaults(run=_run_score)


def _add_shortlist(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("shortlist", help="build a model's vocabulary shortlist from parallel text, for "
                                         "translate --shortlist")
    p.add_argument("model_dir", type=Path)
    p.add_argument("--src", type=Path, required=True, help="source sentences (e.g. the training data), plain or .gz")
    p.add_argument("--trg", type=Path, required=True, help="their translations")
    p.add_argument("--k", type=int, default=50, help="target pieces kept per source piece (default 50)")
    p.add_argument("--frequent", type=int, default=100, help="most frequent target pieces always allowed (default 100)")
    p.add_argument("--method", choices=["alignment", "cooccurrence"], default="alignment",
                   help="alignment: the model's own attention links; cooccurrence: Dice of co-occurring pieces")
    p.add_argument("--max-pairs", type=int, default=0, help="read at most this many pairs (0: all)")
    p.set_defaults(run=_run_shortlist)


def _add_quickstart(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("quickstart", help="offline demo: learn to normalise dates written in many languages")
    p.add_argument("--out", type=Path, default=Path("quickstart_out"), help="working directory (data, model, plot)")
    p.add_argument("--max-time", type=float, default=None, help="training seconds (default: the built-in budget)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(run=_run_quickstart)


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="HTTP translation service and attention viewer (FastAPI + uvicorn)")
    p.add_argument("model_dir", type=Path, help="a model directory, or one written by 'attnmt export --onnx'")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--no-batching", dest="batching", action="store_false",
                   help="decode every request on its own instead of micro-batching concurrent ones")
    p.add_argument("--batch-wait-ms", type=float, default=5.0, help="how long a batch gathers requests (default 5)")
    p.add_argument("--max-batch", type=int, default=64, help="sentences per decoding batch (default 64)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per request before a 504 (default 30)")
    p.add_argument("--max-chars", type=int, default=1000, help="characters per text (default 1000)")
    p.add_argument("--max-texts", type=int, default=32, help="texts per request (default 32)")
    p.add_argument("--max-beam", type=int, default=16, help="largest beam and n-best size (default 16)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")
    _add_precision_option(p)
    _add_ensemble_option(p)
    _add_shortlist_option(p)
    p.add_argument("--threads", type=int, default=0,
                   help="CPU threads of torch or onnxruntime (default: the runtime's choice)")
    p.add_argument("--no-access-log", dest="access_log", action="store_false", help="do not log every request")
    p.set_defaults(run=_run_serve)


def _add_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="download a public corpus, verified, as plain text files")
    datasets = p.add_subparsers(dest="dataset", metavar="DATASET", required=True)
    m = datasets.add_parser("multi30k", help="Multi30k task 1 (en, de, fr): train, val and the test sets")
    m.add_argument("--pair", required=True, help="en-de, en-fr, de-en or fr-en (reverse pairs write the same files)")
    m.add_argument("--out", type=Path, required=True, help="folder for the plain files {split}.{lang}")
    m.add_argument("--from", dest="source_dir", type=Path, metavar="DIR",
                   help="copy from a local folder of {split}.{lang} or {split}.{lang}.gz files instead of downloading")
    m.add_argument("--base-url", default=None, help="download from a mirror of data/task1/raw instead of GitHub")
    m.add_argument("--timeout", type=float, default=60.0, help="seconds a download may stall (default 60)")
    m.set_defaults(run=_run_data)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="attnmt", description="Attention-based neural machine translation.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in (_add_quickstart, _add_prepare, _add_train, _add_eflomal, _add_average, _add_shortlist, _add_export,
                _add_translate, _add_score, _add_evaluate, _add_plot, _add_align, _add_serve, _add_data):
        add(sub)
    return parser


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _run_train(args: argparse.Namespace) -> int:
    from attnmt.config import given_keys, load_config
    from attnmt.training import train
    from attnmt.training.prepare import finetune_config

    config = load_config(args.config, args.overrides)
    if args.init_from is not None:
        config = finetune_config(config, given_keys(args.config, args.overrides), args.init_from)
    result = train(config, args.model_dir, resume=args.resume, overwrite=args.overwrite,
                   progress=False if args.no_progress else None, log=_log, init_from=args.init_from)
    if result.rank == 0:  # under torchrun every process gets here; one says it
        _log(f"{result.steps} steps in {result.elapsed_seconds:.0f}s; best {config.train.early_stopping_metric}: "
             f"{result.best_metric}; model in {result.model_dir}")
    return 0


def _run_eflomal(args: argparse.Namespace) -> int:
    import itertools

    from attnmt.config import load_config
    from attnmt.data.corpus import SplitFiles, check_lengths, iter_pairs
    from attnmt.training.prepare import split_files
    from attnmt.training.word_alignment import eflomal_align

    extra = (args.extra_src, args.extra_trg, args.extra_out)
    if any(extra) and not all(extra):
        raise SystemExit("attnmt eflomal: --extra-src, --extra-trg and --extra-out go together")
    config = load_config(args.config, args.overrides)
    train = split_files(config, "train")
    n_train = check_lengths(train)
    pairs = iter_pairs(train, config.data.encoding_errors, n_train)
    outputs = [(args.out, n_train)]
    if args.extra_src is not None:
        extra_files = SplitFiles(args.extra_src, args.extra_trg)
        n_extra = check_lengths(extra_files)
        pairs = itertools.chain(pairs, iter_pairs(extra_files, "strict", n_extra))
        outputs.append((args.extra_out, n_extra))
    eflomal_align(pairs, outputs, log=_log)
    _log("alignments written: " + ", ".join(f"{lines} pairs to {path}" for path, lines in outputs))
    return 0


def _run_average(args: argparse.Namespace) -> int:
    from attnmt.store import average_models

    if args.last < 0:
        raise SystemExit(f"attnmt average: --last must be at least 0, got {args.last}")
    if args.out.exists() and any(args.out.iterdir()):
        raise SystemExit(f"attnmt average: {args.out} is not empty; give a new directory")
    averaged = average_models(args.sources, args.out, args.last)
    _log(f"averaged {len(averaged)} checkpoints into {args.out}: " + ", ".join(str(path) for path in averaged))
    return 0


def _run_export(args: argparse.Namespace) -> int:
    from attnmt.export.graphs import export_onnx

    written = export_onnx(args.model_dir, args.onnx)
    _log(f"exported {args.model_dir} to {args.onnx}: " + ", ".join(path.name for path in written)
         + f"; translate with 'attnmt translate {args.onnx}' (needs onnxruntime, not torch)")
    return 0


def _run_prepare(args: argparse.Namespace) -> int:
    from attnmt.config import load_config
    from attnmt.store import CONFIG_FILE
    from attnmt.training.prepare import prepare_data

    config = load_config(args.config, args.overrides)
    args.model_dir.mkdir(parents=True, exist_ok=True)
    # a trained model keeps its tokenizers: only its token store is (re)built
    trained = (args.model_dir / CONFIG_FILE).exists()
    data = prepare_data(config, args.model_dir, reuse_tokenizers=trained, log=_log,
                        progress=False if args.no_progress else None)
    _log(f"{data.n_train_pairs} training pairs ready in {data.train.directory}; "
         f"attnmt train {args.config} --model-dir {args.model_dir} uses them")
    return 0


@contextlib.contextmanager
def _input_lines(path: Path | None, encoding_errors: str) -> Iterator[Iterator[str]]:
    """The lines of ``path`` (plain or .gz), or of stdin, one at a time."""
    from attnmt.data.corpus import iter_lines, iter_text_lines

    lines = iter_text_lines(sys.stdin.buffer, "<stdin>", encoding_errors) if path is None else iter_lines(path, encoding_errors)
    with contextlib.closing(lines):  # a file left open by an error is closed
        yield lines


@contextlib.contextmanager
def _output(path: Path | None) -> Iterator[TextIO]:
    """Where output lines go: ``path`` (written as they come), or stdout."""
    if path is None:
        yield sys.stdout
        sys.stdout.flush()
        return
    with open(path, "w", encoding="utf-8") as handle:
        yield handle


def _line_bar(path: Path | None, description: str, quiet: bool):
    """A progress bar of lines on stderr, when it is a terminal (out of the file's line count)."""
    from attnmt.data.corpus import count_lines
    from attnmt.training.progress import bar_wanted, counting_bar

    show = bar_wanted(False if quiet else None)
    return counting_bar(count_lines(path) if show and path is not None else None, description, "lines", show)


def _run_translate(args: argparse.Namespace) -> int:
    if args.deletion_test and args.diagnostics is None:
        raise SystemExit("attnmt translate: --deletion-test goes with --diagnostics FILE (where its results are written)")
    translator = _load_translator(args.model_dir, args, forced_decoding=args.deletion_test, precision=args.precision)
    sampling = {"sampling": True, "temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p,
                "seed": args.seed} if args.sampling else {}
    if not args.sampling and any(value is not None for value in (args.temperature, args.top_k, args.top_p, args.seed)):
        raise SystemExit("attnmt translate: --temperature, --top-k, --top-p and --seed go with --sampling")
    search = translator.search_settings(args.beam, args.n_best, args.length_penalty, **sampling)
    if args.diagnostics is not None and not translator.has_attention:
        raise SystemExit(f"attnmt translate: {args.model_dir} has no attention (model.attention: none): no diagnostics")
    with (_input_lines(args.input, args.encoding_errors) as lines, _output(args.output) as out,
          _output(args.diagnostics) if args.diagnostics else contextlib.nullcontext() as diagnostics,
          _line_bar(args.input, "translating", args.no_progress) as bar):
        for chunk in translator.translate_chunks(lines, beam=search.beam_size, n_best=search.n_best,
                                                 length_penalty=search.length_penalty, **sampling):
            if search.n_best > 1:
                out.writelines(" ||| ".join(f"{t.text} ||| {t.score:.4f}" for t in n_best) + "\n" for n_best in chunk)
            else:
                out.writelines(n_best[0].text + "\n" for n_best in chunk)
            if diagnostics is not None:  # of the best translation of each line
                best = [n_best[0] for n_best in chunk]
                found = translator.diagnose(best) if args.deletion_test else [t.diagnostics for t in best]
                diagnostics.writelines(json.dumps(d.to_dict(), ensure_ascii=False) + "\n" for d in found)
                diagnostics.flush()
            out.flush()  # every line of a chunk is out before the next chunk is read
            bar.update(len(chunk))
    return 0


def _write_lines(lines: list[str], path: Path | None) -> None:
    with _output(path) as out:
        out.writelines(line + "\n" for line in lines)


def _run_evaluate(args: argparse.Namespace) -> int:
    from attnmt.data.corpus import read_lines
    from attnmt.evaluate import format_length_table, format_scores, length_buckets, score_by_length, score_corpus

    if args.model and args.src is None:
        raise SystemExit("attnmt evaluate: --model needs --src (the sentences to translate)")
    if args.by_length and args.src is None:
        raise SystemExit("attnmt evaluate: --by-length needs --src (source lengths define the buckets)")
    if args.plot is not None and not args.by_length:
        raise SystemExit("attnmt evaluate: --plot draws the scores by length; add --by-length")
    if args.output is not None and len(args.model or []) != 1:
        raise SystemExit("attnmt evaluate: --output writes the translations of exactly one --model")
    references = read_lines(args.ref)
    sources = read_lines(args.src) if args.src is not None else None
    systems = [(str(path), read_lines(path)) for path in args.hyp or []]
    for model_dir in args.model or []:
        translator = _load_translator(model_dir, args, precision=args.precision)
        translations = translator.translate_stream(sources, beam=args.beam, n_best=1, length_penalty=args.length_penalty)
        systems.append((str(model_dir), [n_best[0].text for n_best in translations]))  # the texts only are kept
        if args.output is not None:
            _write_lines(systems[-1][1], args.output)
    options = dict(lowercase=args.lowercase, tokenize=args.tokenize)
    if not args.by_length:
        for name, hypotheses in systems:
            scores = score_corpus(hypotheses, references, metrics=("bleu", "chrf"), **options)
            print(format_scores(scores) if len(systems) == 1 else f"{name}\n{format_scores(scores)}")
        return 0
    if len(sources) != len(references):
        raise SystemExit(f"attnmt evaluate: {len(sources)} sources but {len(references)} references")
    buckets = length_buckets(sources, args.bucket_width, args.min_bucket)
    reports = [score_by_length(name, hypotheses, references, buckets, **options) for name, hypotheses in systems]
    print(format_length_table(reports))
    if args.plot is not None:
        from attnmt.explain.viz import plot_scores_by_length

        plot_scores_by_length(reports, args.plot, title=f"{args.src.name} by source length")
        _log(f"scores by length drawn in {args.plot}")
    return 0


def _run_plot(args: argparse.Namespace) -> int:
    from attnmt.explain.alignment import word_attention
    from attnmt.explain.viz import Heatmap, plot_heatmaps

    translator = _load_translator(args.model_dir, args)
    if not translator.has_attention:
        raise SystemExit(f"attnmt plot: {args.model_dir} has no attention (model.attention: none); nothing to plot")
    translations = translator.translate(args.sentences, beam=args.beam, length_penalty=args.length_penalty)
    heatmaps = []
    for sentence, translation in zip(args.sentences, translations):
        if not translation.tokens and translation.attention.size == 0:
            raise SystemExit(f"attnmt plot: the sentence {sentence!r} is empty; nothing to plot")
        heatmaps.append(Heatmap(*word_attention(translation, words=args.words), title=translation.text))
    plot_heatmaps(heatmaps, args.output, columns=args.columns)
    print("\n".join(t.text for t in translations) + f"\nattention heatmap{'s' * (len(heatmaps) > 1)} written to "
          f"{args.output}")
    return 0


def _run_align(args: argparse.Namespace) -> int:
    from attnmt.data.corpus import SplitFiles, check_lengths
    from attnmt.data.alignments import format_links, read_alignments, read_links
    from attnmt.explain.alignment import alignment_error_rate, check_gold_fits

    if (args.model_dir is None) == (args.hyp is None):
        raise SystemExit("attnmt align: give either a model directory (with --src and --trg) or --hyp")
    if (args.by_deletion or args.reverse_model is not None or args.ensemble) and args.hyp is not None:
        raise SystemExit("attnmt align: --by-deletion, --ensemble and --reverse-model read models; --hyp alignments "
                         "are only scored")
    if args.hyp is not None and args.gold is None:
        raise SystemExit("attnmt align: --hyp alignments are scored against --gold; give --gold")
    if (args.reverse_ensemble or args.also or args.reverse_also) and args.reverse_model is None:
        raise SystemExit("attnmt align: --reverse-ensemble, --also and --reverse-also go with --reverse-model")
    gold = read_alignments(args.gold) if args.gold is not None else None
    if args.hyp is not None:
        links = read_links(args.hyp)
    else:
        if args.src is None or args.trg is None:
            raise SystemExit("attnmt align: a model aligns --src with --trg; give both")
        files = SplitFiles(args.src, args.trg)
        check_lengths(files)
        if gold is not None:  # before decoding: a gold file that does not fit the text is an error at once
            words = [(len(source.split()), len(target.split())) for source, target in _raw_pairs(files)]
            check_gold_fits(gold, [n for n, _ in words], [n for _, n in words], str(args.gold))
        translator = _load_translator(args.model_dir, args, forced_decoding=True)
        links = []  # kept for the AER only
        writing = args.output is not None or gold is None
        with _output(args.output) if writing else contextlib.nullcontext() as out:
            if args.reverse_model is not None:
                reverse = [_load_translator(args.reverse_model, args, forced_decoding=True, ensemble=args.reverse_ensemble)]
                reverse += [_load_translator(path, args, forced_decoding=True, ensemble=[]) for path in args.reverse_also]
                also = [_load_translator(path, args, forced_decoding=True, ensemble=[]) for path in args.also]
                reading = {"reverse": reverse, "also": also, "both_ways": True, "by_deletion": args.by_deletion}
            else:
                reading = {"by_deletion": True, "both_ways": True, "by_pieces": True} if args.by_deletion else {}
            for chunk in translator.align_chunks(_raw_pairs(files), **reading):
                if out is not None:
                    out.writelines(format_links(alignment.links) + "\n" for alignment in chunk)
                    out.flush()
                if gold is not None:
                    links += [alignment.links for alignment in chunk]
    if gold is not None:
        print(alignment_error_rate(links, gold))
    return 0


def _raw_pairs(files) -> Iterator[tuple[str, str]]:
    """The lines of two parallel files as they are (words are their whitespace-separated tokens)."""
    from attnmt.data.corpus import iter_lines

    return zip(iter_lines(files.src), iter_lines(files.trg), strict=True)


def _run_score(args: argparse.Namespace) -> int:
    from attnmt.data.alignments import format_links
    from attnmt.data.corpus import SplitFiles, check_lengths

    if (args.trg is None) == (args.n_best is None):
        raise SystemExit("attnmt score: give --trg (translations to score) or --n-best (an n-best list to rescore)")
    if args.alignment and args.trg is None:
        raise SystemExit("attnmt score: --alignment goes with --trg")
    translator = _load_translator(args.model_dir, args, forced_decoding=True, precision=args.precision)
    files = SplitFiles(args.src, args.trg or args.n_best)
    check_lengths(files)  # names both files if they differ
    with _output(args.output) as out:
        if args.trg is not None:
            for chunk in translator.score_chunks(_raw_pairs(files), args.alignment):
                out.writelines(f"{s.log_prob:.4f}\t{s.per_token:.4f}\t{s.tokens}"
                               + (f"\t{format_links(s.alignment.links)}" if args.alignment else "") + "\n" for s in chunk)
                out.flush()
        else:
            for line in _rescored(translator, _raw_pairs(files), args.n_best):
                out.write(line + "\n")
    return 0


def _rescored(translator, pairs: Iterator[tuple[str, str]], path: Path) -> Iterator[str]:
    """Each n-best line ('TEXT ||| SCORE ||| TEXT2 ||| SCORE2 ...') with this model's scores, best first."""
    from attnmt.search import gnmt_length_penalty

    alpha = translator.config.decode.length_penalty
    for number, (source, line) in enumerate(pairs, start=1):
        fields = [field.strip() for field in line.split("|||")]
        if len(fields) % 2:
            raise SystemExit(f"attnmt score: {path}, line {number}: expected 'TEXT ||| SCORE' pairs "
                             "(translate --n-best output)")
        texts = fields[0::2]
        scores = translator.score([source] * len(texts), texts)
        ranked = sorted(((s.log_prob / gnmt_length_penalty(s.tokens, alpha), text) for s, text in zip(scores, texts)),
                        key=lambda item: -item[0])
        yield " ||| ".join(f"{text} ||| {score:.4f}" for score, text in ranked)


def _run_shortlist(args: argparse.Namespace) -> int:
    import itertools

    from attnmt.apps.shortlist import build_shortlist
    from attnmt.data.corpus import SplitFiles, check_lengths, iter_pairs
    from attnmt.store import save_shortlist, tokenizers_digest

    if args.k < 1 or args.frequent < 0 or args.max_pairs < 0:
        raise SystemExit("attnmt shortlist: --k must be at least 1, --frequent and --max-pairs at least 0")
    translator = _load_translator(args.model_dir, args, forced_decoding=True)
    files = SplitFiles(args.src, args.trg)
    pairs = iter_pairs(files, "strict", check_lengths(files))
    if args.max_pairs:
        pairs = itertools.islice(pairs, args.max_pairs)
    lists, frequent = build_shortlist(translator, pairs, args.k, args.frequent, args.method, log=_log)
    digest = tokenizers_digest(translator.src_tokenizer, translator.trg_tokenizer)
    path = save_shortlist(args.model_dir, lists, frequent, digest,
                          {"method": args.method, "k": str(args.k), "frequent": str(args.frequent),
                           "built_from": files.describe()})
    _log(f"shortlist of {args.k} target pieces per source piece ({args.method}) and {len(frequent)} frequent ones "
         f"written to {path}")
    return 0


def _run_serve(args: argparse.Namespace) -> int:
    from attnmt.serve.app import ServeSettings, run_server
    from attnmt.serve.schemas import RequestLimits

    limits = RequestLimits(max_chars=args.max_chars, max_texts=args.max_texts, max_beam=args.max_beam)
    settings = ServeSettings(limits=limits, batching=args.batching, batch_wait_ms=args.batch_wait_ms,
                             max_batch_texts=args.max_batch, timeout=args.timeout)
    _log(f"attnmt serve: {args.model_dir} on http://{args.host}:{args.port}/ "
         f"(micro-batching {'on' if args.batching else 'off'})")
    translator = _load_translator(args.model_dir, args, device=args.device, precision=args.precision)
    run_server(translator, args.model_dir.resolve().name, args.host, args.port, settings, access_log=args.access_log)
    return 0


def _run_quickstart(args: argparse.Namespace) -> int:
    from attnmt.apps.quickstart import run_quickstart

    report = run_quickstart(args.out, seed=args.seed, max_time=args.max_time,
                            progress=False if args.no_progress else None, log=_log)
    return 0 if report.accuracy is not None else 1


def _run_data(args: argparse.Namespace) -> int:
    from attnmt.datasets.multi30k import DEFAULT_BASE_URL, prepare_multi30k

    result = prepare_multi30k(args.pair, args.out, source_dir=args.source_dir,
                              base_url=args.base_url or DEFAULT_BASE_URL, timeout=args.timeout, log=_log)
    _log(f"{len(result.written)} files written to {result.out_dir}"
         + (f"; skipped {', '.join(result.skipped)}" if result.skipped else ""))
    print(result.config_hint())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from attnmt import __version__

        print(f"attnmt {__version__}")
        return 0
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    from attnmt.errors import USER_ERRORS

    try:
        return args.run(args)
    except USER_ERRORS as error:
        print(f"attnmt {args.command}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"attnmt {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
