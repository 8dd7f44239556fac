"""Word alignments of a training corpus by eflomal (Östling and Tiedemann 2016, PyPI ``eflomal``), for
``train.guided_alignment``: ``attnmt eflomal CONFIG --out train.align``.

eflomal aligns in both directions; the two are symmetrised with grow-diag-final-and
(``data.alignments.grow_diag_final_and``), the usual recipe. Words are those of the cleaned text
(``data.text.clean_line``, then split at spaces), as training reads it, so that the links of line i
are the links of training pair i. More sentence pairs can be aligned together with the training data
(``attnmt eflomal --extra-src/--extra-trg``: e.g. those whose gold alignments an evaluation needs,
aligned transductively with the rest, as unsupervised aligners are run); theirs go to a file of their
own. The text and both directions' links pass through temporary files: what this process holds does
not grow with the corpus (eflomal's own model does).
"""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Sequence

from attnmt.data.alignments import format_links, grow_diag_final_and, iter_alignments
from attnmt.errors import TrainingError
from attnmt.store import atomic_write

Log = Callable[[str], None]


def eflomal_align(pairs: Iterable[tuple[str, str]], outputs: Sequence[tuple[Path, int]], log: Log = print,
                  samplers: int = 3) -> None:
    """Align (source, target) sentence pairs (words: their whitespace-separated tokens) with eflomal in
    both directions, symmetrise each pair's links with grow-diag-final-and and write them in the
    Pharaoh format: the first ``outputs[0][1]`` lines to ``outputs[0][0]``, the next ones to the next
    file, and so on (each written atomically)."""
    try:
        import eflomal
    except ImportError:
        raise TrainingError("eflomal is not installed: pip install eflomal (or pip install -e '.[align]')") from None
    with tempfile.TemporaryDirectory(prefix="attnmt-eflomal-") as work:
        work_dir = Path(work)
        count = 0
        with open(work_dir / "src.txt", "w", encoding="utf-8") as src, open(work_dir / "trg.txt", "w", encoding="utf-8") as trg:
            for source, target in pairs:
                src.write(source + "\n")
                trg.write(target + "\n")
                count += 1
        if count != sum(lines for _, lines in outputs):
            raise TrainingError(f"{count} sentence pairs to align, but the outputs take "
                                f"{sum(lines for _, lines in outputs)}")
        log(f"eflomal: aligning {count} sentence pairs in both directions ({samplers} samplers)")
        with open(work_dir / "src.txt", encoding="utf-8") as src, open(work_dir / "trg.txt", encoding="utf-8") as trg:
            eflomal.Aligner(n_samplers=samplers).align(src, trg, links_filename_fwd=str(work_dir / "fwd"),
                                                        links_filename_rev=str(work_dir / "rev"), quiet=True)
        links = (format_links(grow_diag_final_and(sorted(forward.possible), sorted(reverse.possible)))
                 for forward, reverse in zip(iter_alignments(work_dir / "fwd"), iter_alignments(work_dir / "rev"),
                                             strict=True))
        for path, lines in outputs:
            atomic_write(path, lambda tmp, lines=lines: _write_lines(tmp, itertools.islice(links, lines), lines))


def _write_lines(path: Path, lines: Iterable[str], expected: int) -> None:
    written = 0
    with open(path, "w", encoding="utf-8") as out:
        for line in lines:
            out.write(line + "\n")
            written += 1
    if written != expected:
        raise TrainingError(f"eflomal wrote {written} alignments where {expected} sentence pairs were given")
