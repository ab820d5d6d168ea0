"""The query set for evaluation: JSONL of ``{query_id, query, relevant: [chunk ids]}``, UTF-8
(a BOM is dropped). Plain Python: the run's start checks it too (``embedflow.onstart``)."""

from __future__ import annotations

import json
from pathlib import Path

from embedflow.text_files import read_lines


def read_queries(path: str | Path) -> tuple[list[str], list[str], dict[str, set[str]]]:
    """(query ids, texts, relevant ids per query) from a JSONL query set."""
    from embedflow.errors import InputError

    ids, texts, relevant = [], [], {}
    for number, line in read_lines(path):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            query_id, text, wanted = str(record["query_id"]), record["query"], record["relevant"]
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise InputError(f"{path}, line {number}: expected {{query_id, query, relevant: [ids]}} ({error})") from None
        if not isinstance(text, str) or not text.strip() or not isinstance(wanted, list) or not wanted:
            raise InputError(f"{path}, line {number}: query {query_id!r} needs a non-empty query and relevant ids")
        if query_id in relevant:
            raise InputError(f"{path}, line {number}: duplicate query_id {query_id!r}")
        ids.append(query_id)
        texts.append(text)
        relevant[query_id] = {str(item) for item in wanted}
    return ids, texts, relevant
