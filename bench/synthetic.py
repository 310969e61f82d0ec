"""Seeded synthetic content: the VM-like image, random bytes and text.

Everything here is a pure function of its seed, so two copies of the workload
(or one tool's copy and another's after the daily change) are byte-identical.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from itertools import accumulate
from pathlib import Path

MiB = 1024 * 1024
IMAGE_BLOCK = MiB
_ZERO_BLOCK = bytes(IMAGE_BLOCK)


class TextMaker:
    """Word soup with a Zipf-like vocabulary: compresses roughly like prose or logs."""

    def __init__(self, seed: int, vocabulary: int = 6000) -> None:
        rng = random.Random(seed)
        letters = "etaoinshrdlcumwfgypbvkjxqz"
        letter_weights = list(accumulate([26 - i for i in range(26)]))
        self._words = [
            "".join(rng.choices(letters, cum_weights=letter_weights, k=rng.randint(2, 10)))
            for _ in range(vocabulary)
        ]
        self._cum_weights = list(accumulate(1.0 / (rank + 1) for rank in range(vocabulary)))
        self._rng = rng

    def text(self, size: int) -> bytes:
        """``size`` bytes of lines of words."""
        words = self._rng.choices(self._words, cum_weights=self._cum_weights, k=size // 5 + 16)
        out = bytearray()
        line_start = 0
        for word in words:
            out += word.encode()
            if len(out) - line_start > 72:
                out += b"\n"
                line_start = len(out)
            else:
                out += b" "
            if len(out) >= size:
                break
        while len(out) < size:  # very short requests
            out += b"x"
        return bytes(out[:size])


def image_blocks(size: int, seed: int) -> Iterator[bytes]:
    """A VM-disk-like byte stream: half zero runs, a quarter text, a quarter random.

    The kinds are shuffled block by block (1 MiB blocks), so they interleave.
    """
    rng = random.Random(seed)
    text = TextMaker(seed + 1)
    count = -(-size // IMAGE_BLOCK)
    quarter = count // 4
    kinds = ["text"] * quarter + ["random"] * quarter
    kinds += ["zero"] * (count - len(kinds))
    rng.shuffle(kinds)
    left = size
    for kind in kinds:
        n = min(IMAGE_BLOCK, left)
        if kind == "zero":
            yield _ZERO_BLOCK[:n]
        elif kind == "text":
            yield text.text(n)
        else:
            yield rng.randbytes(n)
        left -= n


def random_blocks(size: int, seed: int) -> Iterator[bytes]:
    """Seeded random bytes, 1 MiB at a time."""
    rng = random.Random(seed)
    left = size
    while left > 0:
        n = min(MiB, left)
        yield rng.randbytes(n)
        left -= n


def write_blocks(path: Path, blocks: Iterator[bytes], append: bool = False) -> int:
    """Write (or append) a block stream to ``path``; returns the bytes written."""
    written = 0
    with open(path, "ab" if append else "wb") as f:
        for block in blocks:
            f.write(block)
            written += len(block)
    return written
