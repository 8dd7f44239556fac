"""Word alignments of a training corpus by eflomal (Östling and Tiedemann 2016, PyPI ``eflomal``), for
``train.guided_alignment``: ``attnmt eflomal CONFIG --out train.align``.

eflomal aligns in both directions; the two are symmetrised with grow-diag-final-and
(``data.alignments.grow_diag_final_and``), the usual recipe. Words are those of the cleaned text
(``data.text.clean_line``, then split at spaces), as training reads it, so that the links of line i
are the links of training pair i. More sentence pairs can be aligned together with the training data
(``attnmt eflomal --extra-src/--extra-trg``: e.g. those whose gold alignments an evaluation needs,
aligned transductively with the rest, as unsupervised aligners are run); theirs go to a file of their own.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable, Iterable, Sequence

from attnmt.data.alignments import Link, format_links, grow_diag_final_and, read_alignments
from attnmt.store import atomic_write_text

Log = Callable[[str], None]


def eflomal_alignments(pairs: Iterable[tuple[str, str]], log: Log = print, samplers: int = 3) -> list[list[Link]]:
    """The grow-diag-final-and symmetrised eflomal alignments of (source, target) sentence pairs
    (words: the whitespace-separated tokens); one list of (source word, target word) links each."""
    try:
        import eflomal
    except ImportError:
        raise SystemExit("eflomal is not installed: pip install eflomal (or pip install -e '.[align]')") from None
    with tempfile.TemporaryDirectory(prefix="attnmt-eflomal-") as work:
        work_dir = Path(work)
        count = 0
        with open(work_dir / "src.txt", "w", encoding="utf-8") as src, open(work_dir / "trg.txt", "w", encoding="utf-8") as trg:
            for source, target in pairs:
                src.write(source + "\n")
                trg.write(target + "\n")
                count += 1
        log(f"eflomal: aligning {count} sentence pairs in both directions ({samplers} samplers)")
        aligner = eflomal.Aligner(n_samplers=samplers)
        with open(work_dir / "src.txt", encoding="utf-8") as src, open(work_dir / "trg.txt", encoding="utf-8") as trg:
            aligner.align(src, trg, links_filename_fwd=str(work_dir / "fwd"), links_filename_rev=str(work_dir / "rev"),
                          quiet=True)
        forward, reverse = read_alignments(work_dir / "fwd"), read_alignments(work_dir / "rev")
    if len(forward) != count or len(reverse) != count:
        raise RuntimeError(f"eflomal wrote {len(forward)} and {len(reverse)} alignments for {count} sentence pairs")
    return [grow_diag_final_and(sorted(f.possible), sorted(r.possible)) for f, r in zip(forward, reverse)]


def write_alignments(path: Path, alignments: Sequence[Sequence[Link]]) -> None:
    """One Pharaoh line per sentence pair, written atomically."""
    atomic_write_text(path, "".join(format_links(links) + "\n" for links in alignments))
