"""The pairs file of a projection head: JSON Lines of ``{query, positive_id}`` (the passage
is that chunk's text) or ``{query, positive}``. Plain Python: the run's start checks it too
(``embedflow.onstart``)."""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from embedflow.chunks import find_texts
from embedflow.errors import InputError
from embedflow.text_files import read_lines


@dataclass(frozen=True)
class Pairs:
    queries: list[str]
    passages: list[str]
    keys: list[str]  # what identifies a passage (its chunk id, or its text)


def parse_pairs(pairs_path: str | Path) -> list[tuple[int, dict]]:
    """(line number, pair) of each line; the checks that need no chunks file."""
    rows = []
    for number, line in read_lines(pairs_path):
        if not line.strip():
            continue
        where = f"{pairs_path}: line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise InputError(f"{where}: not valid JSON ({error.msg}, column {error.colno})") from None
        if not isinstance(row, dict):
            raise InputError(f"{where}: expected an object with query and positive_id or positive")
        if not isinstance(row.get("query"), str) or not row["query"].strip():
            raise InputError(f"{where}: 'query' must be a non-empty string")
        has_id, has_text = row.get("positive_id") is not None, row.get("positive") is not None
        if has_id == has_text:
            raise InputError(f"{where}: give exactly one of 'positive_id' (a chunk id) and 'positive' (a text)")
        if has_text and (not isinstance(row["positive"], str) or not row["positive"].strip()):
            raise InputError(f"{where}: 'positive' must be a non-empty string")
        rows.append((number, row))
    if len(rows) < 2:
        raise InputError(f"{pairs_path}: {len(rows)} pair(s); training with in-batch negatives needs at least 2")
    return rows


def read_pairs(pairs_path: str | Path, chunks_path: str | Path, text_field: str, skip: Collection[int] = ()) -> Pairs:
    """{"query", "positive_id"} lines (passage = that chunk's text) or {"query", "positive"}.
    ``skip``: positions of chunks rejected by on_bad_chunk: skip, which no pair can name."""
    rows = parse_pairs(pairs_path)
    wanted = {str(row["positive_id"]) for _, row in rows if row.get("positive_id") is not None}
    texts = find_texts(chunks_path, text_field, wanted, skip)
    queries, passages, keys = [], [], []
    for number, row in rows:
        if row.get("positive_id") is not None:
            chunk_id = str(row["positive_id"])
            if chunk_id not in texts:
                raise InputError(f"{pairs_path}: line {number}: positive_id {chunk_id!r} is not a chunk of {chunks_path}")
            passages.append(texts[chunk_id])
            keys.append(f"id:{chunk_id}")
        else:
            passages.append(row["positive"])
            keys.append(f"text:{row['positive']}")
        queries.append(row["query"])
    return Pairs(queries, passages, keys)
