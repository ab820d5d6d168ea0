"""embedflow.load against the embedded PostgreSQL + pgvector: tables, types, atomic replacement."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO, search_plan, synthetic_corpus, table_oid
from embedflow.embeddings_file import iter_batches
from embedflow.errors import UserError
from embedflow.load import load_table
from embedflow.search import search

# float16's smallest normal number: below it, float16 (halfvec) has fewer bits than bfloat16.
FLOAT16_TINY = float(np.finfo(np.float16).tiny)


def test_load_counts_dims_metadata_and_nearest_neighbour(db, db_corpus):
    folder, chunks, vectors = db_corpus
    facts = load_table(db, "t_float32", folder / "embeddings_synthetic_float32.parquet", chunks)
    assert (facts["rows"], facts["dim"], facts["column_type"]) == (600, 32, "vector(32)")
    row = db.execute(
        "SELECT content, summary, metadata, vector_dims(embedding) FROM t_float32 WHERE id = 'c7'"
    ).fetchone()
    assert row == ("chunk number 7", "#7", {"module": "m", "n": 7}, 32)
    hits = search(db, search_plan(db, "t_float32"), "t_float32", vectors[123], k=3)
    assert hits[0][0] == "c123" and hits[0][1] == pytest.approx(-1, abs=1e-5)
    exact = np.argsort(-(vectors @ vectors[123]))[:3]
    assert [hit[0] for hit in hits] == [f"c{i}" for i in exact]
    registry = db.execute("SELECT rows, parquet_sha256 FROM embedflow_tables WHERE table_name = 't_float32'").fetchone()
    assert registry == (600, facts["parquet_sha256"])


def test_reload_is_idempotent_and_replaces_another_dim(db, db_corpus, tmp_path, caplog):
    folder, chunks, _ = db_corpus
    first = load_table(db, "t_swap", folder / "embeddings_synthetic_float32.parquet", chunks)
    again = load_table(db, "t_swap", folder / "embeddings_synthetic_float32.parquet", chunks)
    assert again["rows"] == 600 and (again["strategy"], again["unchanged"], again["oid"]) == ("diff", 600, first["oid"])
    small_chunks, _ = synthetic_corpus(tmp_path, 50, 16)
    with caplog.at_level("WARNING"):
        facts = load_table(db, "t_swap", tmp_path / "embeddings_synthetic_float32.parquet", small_chunks)
    assert facts["column_type"] == "vector(16)" and facts["rows"] == 50 and facts["replaced"] == "vector(32)"
    assert "was vector(32), now vector(16)" in caplog.text
    assert db.execute("SELECT count(*) FROM pg_class WHERE relname LIKE 't_swap%%staging%%'").fetchone()[0] == 0


def test_precisions_map_to_pgvector_types(db, db_corpus):
    folder, chunks, _ = db_corpus
    half = load_table(db, "t_float16", folder / "embeddings_synthetic_float16.parquet", chunks)
    bits = load_table(db, "t_binary", folder / "embeddings_synthetic_binary.parquet", chunks)
    assert half["column_type"] == "halfvec(32)" and bits["column_type"] == "bit(32)"
    with pytest.raises(UserError, match="no int8 vector type.*halfvec.*bit"):
        load_table(db, "t_int8", folder / "embeddings_synthetic_int8.parquet", chunks)
    assert table_oid(db, "t_int8") is None


def test_bfloat16_is_loaded_as_halfvec_with_its_values(db, db_corpus):
    """README: bfloat16 is stored as halfvec; for unit vectors the two differ only below
    float16's smallest normal numbers."""
    folder, chunks, _ = db_corpus
    parquet = folder / "embeddings_synthetic_bfloat16.parquet"
    facts = load_table(db, "t_bfloat16", parquet, chunks)
    assert facts["column_type"] == "halfvec(32)" and facts["precision"] == "bfloat16"
    registry = db.execute(
        "SELECT precision, column_type FROM embedflow_tables WHERE table_name = 't_bfloat16'"
    ).fetchone()
    assert registry == ("bfloat16", "halfvec(32)")
    stored = {row_id: vector for batch in iter_batches(parquet) for row_id, vector in zip(batch.ids, batch.vectors)}
    rows = db.execute("SELECT id, embedding FROM t_bfloat16").fetchall()
    db.commit()
    assert len(rows) == len(stored) == 600
    loaded = np.stack([value.to_numpy().astype(np.float32) for _, value in rows])
    expected = np.stack([stored[row_id] for row_id, _ in rows])
    normal = np.abs(expected) >= FLOAT16_TINY
    assert normal.mean() > 0.99  # the comparison below covers nearly every value
    np.testing.assert_array_equal(loaded[normal], expected[normal])  # exact: bfloat16 has fewer mantissa bits
    # float16 subnormals are spaced 2**-24 apart: off by at most half a step
    assert np.abs(loaded[~normal] - expected[~normal]).max(initial=0) <= 2.0**-25


def _copy_writing_rows(db, into: str | None = None) -> tuple[int, int] | None:
    """(backend pid, rows so far) of a COPY FROM on this server that has written rows (into
    table ``into``, when given), if any."""
    row = db.execute(
        "SELECT p.pid, p.tuples_processed FROM pg_stat_progress_copy p JOIN pg_stat_activity a USING (pid) "
        "WHERE p.command = 'COPY FROM' AND p.tuples_processed > 0 AND (%s::text IS NULL OR a.query LIKE %s)",
        (into, f'COPY "{into}"%'),
    ).fetchone()
    db.commit()  # statistics views are read anew in each transaction
    return row


def _backend_exists(db, pid: int) -> bool:
    alive = db.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()[0] > 0
    db.commit()
    return alive


def _poll(condition, what: str, child=None, timeout: float = 120):
    """Wait for an event the other side signals; fail (never hang) if it does not come."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if child is not None and child.poll() is not None:
            pytest.fail(f"the load ended (exit {child.returncode}) before {what}")
        time.sleep(0.01)
    pytest.fail(f"timed out waiting for {what}")


def test_killed_copy_leaves_the_previous_table_and_no_marker(db, embedded_db, tmp_path):
    previous_chunks, _ = synthetic_corpus(tmp_path / "previous", 50, 32)
    load_table(db, "t_kill", tmp_path / "previous/embeddings_synthetic_float32.parquet", previous_chunks)
    oid = table_oid(db, "t_kill")
    db.commit()
    chunks, _ = synthetic_corpus(tmp_path / "next", 20_000, 32, batch=2000)
    marker = tmp_path / "marker.json"
    code = "\n".join([
        "from embedflow.database import connect, DatabaseSettings",
        "from embedflow.load import load_table",
        "from embedflow.atomic import write_json",
        f"with connect(DatabaseSettings(pgdata={embedded_db.pgdata!r})) as connection:",
        f"    facts = load_table(connection, 't_kill', {str(tmp_path / 'next/embeddings_synthetic_float32.parquet')!r}, {str(chunks)!r})",
        f"write_json({str(marker)!r}, facts)",
    ])
    child = subprocess.Popen([sys.executable, "-c", code], cwd=REPO)
    try:
        backend, _ = _poll(lambda: _copy_writing_rows(db), "its COPY was seen writing rows", child)
        child.send_signal(signal.SIGSTOP)  # frozen mid-COPY: it can neither finish nor commit
        copying = db.execute("SELECT relid FROM pg_stat_progress_copy WHERE pid = %s", (backend,)).fetchone()
        db.commit()
        assert copying is not None, "the COPY ended before the load could be frozen"
        child.kill()
        child.wait()
        _poll(lambda: not _backend_exists(db, backend), "the server ended the killed load's session")
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    staging = db.execute(
        "SELECT count(*) FROM pg_class WHERE oid = %s OR relname LIKE 't_kill%%staging%%'", (copying[0],)
    ).fetchone()[0]
    assert staging == 0  # the table the COPY was writing into is gone with its transaction
    assert not marker.exists()
    assert table_oid(db, "t_kill") == oid
    assert db.execute("SELECT count(*) FROM t_kill").fetchone()[0] == 50
    assert db.execute("SELECT to_regclass('t_kill__staging')").fetchone()[0] is None
    db.commit()
