"""Rule preflight's records index: one row per accepted chunk, with where it is and its hash."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from embedflow.chunks import ChunkError, iter_records, records_at, validate_chunks
from embedflow.hashing import sha256_file, sha256_record
from embedflow.records_file import RecordsWriter, indexed_corpus, iter_index


def write_index(chunks, path, policy="skip"):
    with RecordsWriter(path) as records:
        summary = validate_chunks(chunks, "content", policy, accepted=records.add)
        records.corpus_sha256 = summary.sha256
    return summary


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_the_index_holds_each_accepted_chunk_with_its_place_and_record_hash(tmp_path, suffix):
    records = [{"id": "a", "content": "one", "n": 1}, {"id": "b", "content": ""},  # empty text: rejected
               {"id": "c", "content": "three", "tags": ["x"]}, {"id": "a", "content": "again"},  # duplicate
               {"id": 5, "content": "five"}]
    chunks = tmp_path / f"chunks{suffix}"
    if suffix == ".jsonl":
        chunks.write_text("\n".join(json.dumps(r) for r in records[:2]) + "\n\n" +
                          "\n".join(json.dumps(r) for r in records[2:]) + "\n")
    else:
        chunks.write_text(json.dumps(records, indent=1))
    summary = write_index(chunks, tmp_path / "index.parquet")
    skip = {rejected["position"] for rejected in summary.rejected}
    assert skip == {1, 3}
    accepted = list(iter_records(chunks, skip))
    index = list(iter_index(tmp_path / "index.parquet"))
    assert index == [(str(record["id"]), place, sha256_record(record)) for place, record in accepted]
    assert [row[0] for row in index] == ["a", "c", "5"]
    assert records_at(chunks, [place for _, place, _ in index]) == dict(accepted)
    assert pq.read_table(tmp_path / "index.parquet").column("position").to_pylist() == [0, 2, 4]
    assert indexed_corpus(tmp_path / "index.parquet") == sha256_file(chunks)
    assert indexed_corpus(chunks) is None  # not an index


def test_a_failed_check_leaves_no_index(tmp_path):
    chunks = tmp_path / "chunks.jsonl"
    chunks.write_text('{"id": "a", "content": "x"}\n{"id": "b"}\n')
    with pytest.raises(ChunkError, match="has no 'content'"):
        write_index(chunks, tmp_path / "index.parquet", policy="fail")
    assert list(tmp_path.iterdir()) == [chunks]
    with pytest.raises(ValueError, match="no corpus_sha256"), RecordsWriter(tmp_path / "index.parquet"):
        pass  # an index that names no corpus is never written
    assert list(tmp_path.iterdir()) == [chunks]
