"""Synthetic SDK-documentation texts with a realistic mix of lengths (standard library only).

An SDK's documentation, chunked, is mostly short pieces with a heavy tail: many one-line
signatures with their summary, docstrings of a few sentences with their arguments, and
some long sections (a module's overview, a guide with code). ``sdk_texts`` draws each
text's kind by its share and its length in words from a log-normal per kind (cut at the
kind's maximum), then writes that many words of signature-, docstring- or prose-like text.
A word is about 1.3 WordPiece tokens here (MiniLM's tokenizer: code splits into pieces);
the benchmarks measure and report the token lengths they actually get.
"""

from __future__ import annotations

import math
import random

# kind: (share of the texts, median words, log-normal sigma, most words)
KINDS = {
    "signature": (0.40, 14, 0.45, 60),
    "docstring": (0.45, 80, 0.65, 600),
    "section": (0.15, 320, 0.60, 3000),
}

WORDS = (
    "the a an of to in for on with by from as is are be returns return value values object objects "
    "string strings list lists dict mapping key keys item items file files path paths name names "
    "default defaults argument arguments parameter parameters type types optional required raise "
    "raises error errors exception timeout buffer bytes encoding text line lines read write open "
    "close flush seek offset size length index count start stop step iterator iterable sequence "
    "callable function method class instance attribute module package import call calls called "
    "when if not none true false new existing current given each every all any first last next "
    "previous number integer float decimal fraction time date zone event loop task future thread "
    "process lock queue socket address port host request response header body status client server "
    "session connection cursor query row rows column table schema field record cache entry entries "
    "handler callback context manager resource pool worker batch stream chunk block frame node tree "
    "graph edge parent child root level depth mode flag flags option options config setting "
    "environment variable format pattern match group regex token tokens parse parser encode decode "
    "serialize load dump copy deep shallow sort sorted reverse filter map reduce sum min max hash "
    "compare equal order set frozen tuple array vector matrix shape dtype device memory limit retry"
).split()
TYPES = ("str", "int", "float", "bool", "bytes", "None", "list[str]", "dict[str, Any]", "Path", "Iterator[bytes]")
SECTIONS = ("Args:", "Returns:", "Raises:", "Example:", "Note:", "See also:")


def _length(rng: random.Random, median: int, sigma: float, most: int) -> int:
    return max(3, min(most, round(math.exp(rng.gauss(math.log(median), sigma)))))


def _identifier(rng: random.Random) -> str:
    return "_".join(rng.choice(WORDS) for _ in range(rng.randint(1, 3)))


def _sentence(rng: random.Random, words: int) -> str:
    text = " ".join(rng.choice(WORDS) for _ in range(words))
    return text[:1].upper() + text[1:] + "."


def _signature(rng: random.Random, words: int) -> str:
    args = ", ".join(
        f"{_identifier(rng)}: {rng.choice(TYPES)}" + (" = None" if rng.random() < 0.4 else "")
        for _ in range(rng.randint(0, 4))
    )
    head = f"{_identifier(rng)}.{_identifier(rng)}({args}) -> {rng.choice(TYPES)}"
    return f"{head}\n{_sentence(rng, max(3, words - 6))}"


def _docstring(rng: random.Random, words: int) -> str:
    parts, left = [], words
    while left > 0:
        if parts and rng.random() < 0.3:
            parts.append(f"{rng.choice(SECTIONS)}\n    {_identifier(rng)} ({rng.choice(TYPES)}):")
            left -= 4
        take = min(left, rng.randint(6, 22))
        parts.append(_sentence(rng, take))
        left -= take
    return "\n".join(parts)


def _section(rng: random.Random, words: int) -> str:
    parts, left = [], words
    while left > 0:
        if rng.random() < 0.2:
            parts.append(f">>> {_identifier(rng)}({_identifier(rng)}={rng.randint(0, 999)})")
            left -= 3
        take = min(left, rng.randint(30, 90))
        parts.append(" ".join(_sentence(rng, rng.randint(6, 20)) for _ in range(max(1, take // 13))))
        left -= take
    return "\n\n".join(parts)


WRITERS = {"signature": _signature, "docstring": _docstring, "section": _section}


def sdk_texts(count: int, seed: int = 0) -> list[str]:
    """``count`` texts, the same ones for the same seed."""
    rng = random.Random(seed)
    kinds, shares = zip(*((kind, spec[0]) for kind, spec in KINDS.items()))
    texts = []
    for kind in rng.choices(kinds, weights=shares, k=count):
        _, median, sigma, most = KINDS[kind]
        texts.append(WRITERS[kind](rng, _length(rng, median, sigma, most)))
    return texts


def vocabulary() -> list[str]:
    """The words these texts are made of, for a word-level tokenizer. Whatever else a
    pre-tokenizer cuts out (identifiers such as ``open_file``, runs of punctuation) becomes
    its unknown token: one token each all the same, so lengths do not depend on it."""
    return sorted({word for word in WORDS} | {word.capitalize() for word in WORDS})


def percentiles(values: list[int], points=(50, 90, 99, 100)) -> dict[str, int]:
    ordered = sorted(values)
    return {f"p{p}": ordered[min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1)] for p in points}
