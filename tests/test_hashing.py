"""File digests: a large file's is remembered while the file is the same, never after."""

from __future__ import annotations

import hashlib
import os

from embedflow import hashing
from embedflow.hashing import sha256_file

LARGE = hashing._REMEMBERED_FROM_BYTES


def test_a_remembered_digest_is_not_served_for_a_replaced_or_rewritten_file(tmp_path):
    path = tmp_path / "e.parquet"
    first = os.urandom(1024) * (LARGE // 1024)
    path.write_bytes(first)
    assert sha256_file(path) == sha256_file(path) == hashlib.sha256(first).hexdigest()
    replaced = tmp_path / "new.parquet"
    replaced.write_bytes(first[:-1] + b"x")  # same size, a new inode once renamed into place
    os.replace(replaced, path)
    assert sha256_file(path) == hashlib.sha256(first[:-1] + b"x").hexdigest()
    with open(path, "ab") as handle:  # grown in place
        handle.write(b"y")
    assert sha256_file(path) == hashlib.sha256(first[:-1] + b"xy").hexdigest()


def test_a_large_file_is_read_once_while_it_stays_the_same(tmp_path, monkeypatch):
    path = tmp_path / "e.parquet"
    path.write_bytes(bytes(LARGE))
    digest = sha256_file(path)
    reads = []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda *a, **k: reads.append(a[0]) or real_open(*a, **k))
    assert sha256_file(path) == digest and reads == []
    small = tmp_path / "small.json"
    small.write_text("{}")
    sha256_file(small)
    sha256_file(small)
    assert reads == [small, small]  # a small file is always read again
