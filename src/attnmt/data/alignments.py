"""Word alignment files in the Pharaoh format of Moses and fast_align: one line per sentence pair,
links ``i-j`` from source word i to target word j, both counted from 0, words being the
whitespace-separated tokens of the text. Gold files tell sure links (``i-j``) from possible ones
(``i-jp``, ``ipj`` or ``i?j``).

Reading them lives here, below everything that uses them: evaluation (AER, attnmt.explain.alignment)
and training (guided alignment, attnmt.training.prepare).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from attnmt.data.corpus import iter_lines, read_lines
from attnmt.errors import AlignmentError

Link = tuple[int, int]  # (source word, target word), from 0


def format_links(links: Sequence[Link]) -> str:
    return " ".join(f"{source}-{target}" for source, target in links)


# "i-j" is a sure link; "i-jp", "ipj" (as in the alignment-scripts of Zenkel et al.) and "i?j" possible ones.
_LINK = re.compile(r"^(\d+)(?:-(\d+)([pP]?)|[pP?](\d+))$")


@dataclass(frozen=True)
class GoldAlignment:
    """The reference links of one sentence pair."""

    sure: frozenset[Link]
    possible: frozenset[Link]  # sure links included

    @property
    def largest_indices(self) -> tuple[int, int]:
        """(largest source index, largest target index) of any link; -1 without links."""
        return max((s for s, _ in self.possible), default=-1), max((t for _, t in self.possible), default=-1)


def parse_alignment(line: str, where: str = "") -> GoldAlignment:
    """One line of links: ``0-0 1-2p 3p4 5?5``; ``where`` (file and line) goes into errors."""
    sure, possible = set(), set()
    for item in line.split():
        match = _LINK.match(item)
        if match is None:
            raise AlignmentError(f"{where or 'alignment'}: cannot read the link {item!r}; "
                                 "expected i-j (sure), or i-jp, ipj or i?j (possible), indices from 0")
        source, target, possible_mark, possible_target = match.groups()
        if target is None:
            link = (int(source), int(possible_target))
        else:
            link = (int(source), int(target))
            if not possible_mark:
                sure.add(link)
        possible.add(link)
    return GoldAlignment(frozenset(sure), frozenset(possible))


def read_alignments(path: Path | str) -> list[GoldAlignment]:
    """One GoldAlignment per line of a Pharaoh file (plain or .gz); an empty line has no links."""
    return [parse_alignment(line, f"{path}, line {number}") for number, line in enumerate(read_lines(path), 1)]


def read_links(path: Path | str) -> list[list[Link]]:
    """Predicted links, one sorted list per line of a Pharaoh file (an aligner's output: every link
    it gives, sure or possible alike), to score against gold alignments."""
    return [sorted(alignment.possible) for alignment in read_alignments(path)]


def iter_alignments(path: Path | str) -> Iterator[GoldAlignment]:
    """The alignments of a Pharaoh file one line at a time, for files as long as a training corpus."""
    for number, line in enumerate(iter_lines(path), 1):
        yield parse_alignment(line, f"{path}, line {number}")


# --- symmetrising two directions of an aligner ------------------------------------------------------

_NEIGHBOURS = ((-1, 0), (0, -1), (1, 0), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1))


def grow_diag_final_and(forward: Sequence[Link], reverse: Sequence[Link]) -> list[Link]:
    """The grow-diag-final-and symmetrisation of Koehn et al. (2003), as Moses' symal computes it:
    start from the links both directions agree on; repeatedly add a link of either direction that
    neighbours (diagonals included) a kept link and touches a word no kept link has; finally add
    the links of each direction whose two words are both still unaligned. Links are (source word,
    target word), in either direction's file the same way round."""
    union, alignment = set(forward) | set(reverse), set(forward) & set(reverse)
    aligned_src = {source for source, _ in alignment}
    aligned_trg = {target for _, target in alignment}
    grown = True
    while grown:
        grown = False
        for source, target in sorted(alignment):
            for d_source, d_target in _NEIGHBOURS:
                link = (source + d_source, target + d_target)
                if link in union and link not in alignment and (
                        link[0] not in aligned_src or link[1] not in aligned_trg):
                    alignment.add(link)
                    aligned_src.add(link[0])
                    aligned_trg.add(link[1])
                    grown = True
    for direction in (forward, reverse):
        for source, target in sorted(set(direction)):
            if source not in aligned_src and target not in aligned_trg:
                alignment.add((source, target))
                aligned_src.add(source)
                aligned_trg.add(target)
    return sorted(alignment, key=lambda link: (link[1], link[0]))
