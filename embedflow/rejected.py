"""The rejected file, ``results/rejected/<corpus>.jsonl``: the chunks that ``on_bad_chunk: skip``
leaves out, one JSON object a line: ``position`` (0-based, in the chunks file), ``line``
(JSON Lines only, else null), ``id`` (null when the chunk has none that can be read) and
``reason``. Written in ASCII (JSON escapes), so that an id with a NUL or a surrogate in it
is still a valid line. Rule preflight writes it (empty when nothing is rejected); every
rule that reads the chunks file after it skips these positions.
"""

from __future__ import annotations

import json
from pathlib import Path

from embedflow.atomic import write_text
from embedflow.errors import InputError


def write_rejected(path: str | Path, records) -> Path:
    return write_text(path, "".join(json.dumps(record, sort_keys=True) + "\n" for record in records))


def read_rejected(path: str | Path | None) -> list[dict]:
    if not path:
        return []
    records = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        try:
            records.append(json.loads(line))
            int(records[-1]["position"])
        except (ValueError, KeyError, TypeError):
            raise InputError(f"{path}, line {number}: not a rejected chunk record; rerun the workflow "
                             "(rule preflight writes this file)") from None
    return records


def rejected_positions(path: str | Path | None) -> frozenset[int]:
    return frozenset(int(record["position"]) for record in read_rejected(path))
