"""What the chain can store: the values ``validate_chunks`` lets through reach PostgreSQL.

A chunk's id, content and summary go to ``text`` columns and to Parquet; the
rest of its record goes to a ``jsonb`` column. On the way they are encoded as
UTF-8 (sha256 of the text, Parquet strings, the tokenizer, psycopg) and the
metadata as JSON text again. What one of these refuses:

* U+0000 (NUL): PostgreSQL's ``text`` cannot hold it, nor ``jsonb`` (as the
  escape ``\\u0000``), in a value or in a key;
* a surrogate code point (U+D800 to U+DFFF), which JSON's ``\\ud800`` escapes
  can carry but UTF-8 cannot encode;
* NaN and the infinities (Python's JSON reader takes ``NaN``, ``Infinity``
  and ``1e999``; JSON, and so ``jsonb``, has no such numbers);
* metadata nested more than ``MAX_DEPTH`` levels (a limit of ours, far below
  PostgreSQL's, safely below Python's JSON reader and writer).

Sizes are not checked: PostgreSQL holds about 1 GB in a ``text`` value and
255 MB in a ``jsonb`` object, far above what a chunk holds.
tests/test_storable.py proves the rule against the real server by property.
"""

from __future__ import annotations

import math
import re

NUL = "\x00"
# Metadata deeper than this is refused: Python's JSON reader and writer stop near
# 1,000 levels, less what the stack already holds, and load writes it again
# deeper in the stack than validation read it.
MAX_DEPTH = 500
_SURROGATE = re.compile("[\ud800-\udfff]")


def string_problem(value: str) -> str | None:
    """Why this string cannot be stored, or None."""
    at = value.find(NUL)
    if at >= 0:
        return f"contains a NUL character (U+0000) at character {at + 1}, which PostgreSQL cannot store"
    surrogate = _SURROGATE.search(value)
    if surrogate:
        return (
            f"contains a lone surrogate (U+{ord(surrogate.group()):04X}) at character "
            f"{surrogate.start() + 1}, which is not valid Unicode and cannot be written as UTF-8"
        )
    return None


def number_problem(value: float) -> str | None:
    if math.isfinite(value):
        return None
    name = "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return f"is {name}, which JSON (and so PostgreSQL's jsonb) has no number for"


def metadata_problem(record: dict, text_keys: tuple[str, ...]) -> tuple[str, str] | None:
    """(where, why) of the first value or key of the metadata that cannot be stored.

    The metadata are the record's keys other than ``text_keys``. ``where`` names
    the key as a path (``source.url``, ``tags[2]``). Iterative, so that the walk
    itself never runs out of stack.
    """
    stack: list[tuple[str, object, int]] = []
    for key in reversed(list(record)):
        if key in text_keys:
            continue
        problem = string_problem(key)
        if problem:
            return f"key {_quote(key)}", problem
        stack.append((key, record[key], 1))
    while stack:
        path, value, depth = stack.pop()
        problem = None
        if isinstance(value, str):
            problem = string_problem(value)
        elif isinstance(value, float):
            problem = number_problem(value)
        elif isinstance(value, (dict, list)) and depth > MAX_DEPTH:
            problem = f"is nested more than {MAX_DEPTH} levels deep"
        elif isinstance(value, dict):
            for key in reversed(list(value)):
                key_problem = string_problem(key)
                if key_problem:
                    return f"key {_quote(key)} in {_quote(path)}", key_problem
                stack.append((f"{path}.{key}", value[key], depth + 1))
        elif isinstance(value, list):
            stack.extend((f"{path}[{index}]", item, depth + 1) for index, item in reversed(list(enumerate(value))))
        if problem:
            return _quote(path), problem
    return None


def _quote(text: str, limit: int = 80) -> str:
    """repr() escapes NUL and surrogates, so a message is always writable as UTF-8."""
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")
