"""Load and index against a real PostgreSQL + pgvector (the embedded server, and one reached by DSN)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO, synthetic_corpus
from embedflow.database import DatabaseSettings, connect, describe_target
from embedflow.errors import ConfigError, UserError
from embedflow.index import IndexSettings, build_index, column_of, plan_for
from embedflow.load import load_table
from embedflow.search import search
from embedflow.tables import table_name

BUILD = {"maintenance_work_mem": "128MB", "max_parallel_maintenance_workers": 0}


def table_oid(connection, table):
    return connection.execute("SELECT to_regclass(%s)::oid::bigint", (table,)).fetchone()[0]


def plan(connection, table, settings=IndexSettings()):
    with connection.cursor() as cursor:
        column = column_of(cursor, table)
    connection.commit()
    return plan_for(column, settings)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    chunks, vectors = synthetic_corpus(folder, 600, 32, precisions=("float32", "float16", "binary", "int8"))
    return folder, chunks, vectors


def test_load_counts_dims_metadata_and_nearest_neighbour(db, corpus):
    folder, chunks, vectors = corpus
    facts = load_table(db, "t_float32", folder / "embeddings_synthetic_float32.parquet", chunks)
    assert (facts["rows"], facts["dim"], facts["column_type"]) == (600, 32, "vector(32)")
    row = db.execute(
        "SELECT content, summary, metadata, vector_dims(embedding) FROM t_float32 WHERE id = 'c7'"
    ).fetchone()
    assert row == ("chunk number 7", "#7", {"module": "m", "n": 7}, 32)
    hits = search(db, plan(db, "t_float32"), "t_float32", vectors[123], k=3)
    assert hits[0][0] == "c123" and hits[0][1] == pytest.approx(-1, abs=1e-5)
    exact = np.argsort(-(vectors @ vectors[123]))[:3]
    assert [hit[0] for hit in hits] == [f"c{i}" for i in exact]
    registry = db.execute("SELECT rows, parquet_sha256 FROM embedflow_tables WHERE table_name = 't_float32'").fetchone()
    assert registry == (600, facts["parquet_sha256"])


def test_reload_is_idempotent_and_replaces_another_dim(db, corpus, tmp_path, caplog):
    folder, chunks, _ = corpus
    load_table(db, "t_swap", folder / "embeddings_synthetic_float32.parquet", chunks)
    again = load_table(db, "t_swap", folder / "embeddings_synthetic_float32.parquet", chunks)
    assert again["rows"] == 600 and again["replaced"] == "vector(32)"
    small_chunks, _ = synthetic_corpus(tmp_path, 50, 16)
    with caplog.at_level("WARNING"):
        facts = load_table(db, "t_swap", tmp_path / "embeddings_synthetic_float32.parquet", small_chunks)
    assert facts["column_type"] == "vector(16)" and facts["rows"] == 50
    assert "was vector(32), now vector(16)" in caplog.text
    assert db.execute("SELECT count(*) FROM pg_class WHERE relname LIKE 't_swap%%staging%%'").fetchone()[0] == 0


def test_precisions_map_to_pgvector_types(db, corpus):
    folder, chunks, _ = corpus
    half = load_table(db, "t_float16", folder / "embeddings_synthetic_float16.parquet", chunks)
    bits = load_table(db, "t_binary", folder / "embeddings_synthetic_binary.parquet", chunks)
    assert half["column_type"] == "halfvec(32)" and bits["column_type"] == "bit(32)"
    with pytest.raises(UserError, match="no int8 vector type.*halfvec.*bit"):
        load_table(db, "t_int8", folder / "embeddings_synthetic_int8.parquet", chunks)
    assert table_oid(db, "t_int8") is None


def test_binary_table_answers_hamming_queries(db, corpus):
    folder, chunks, vectors = corpus
    load_table(db, "t_bits", folder / "embeddings_synthetic_binary.parquet", chunks)
    facts = build_index(db, "t_bits", IndexSettings(), BUILD)
    assert "bit_hamming_ops" in facts["definition"] and facts["metric"] == "hamming"
    hits = search(db, plan(db, "t_bits"), "t_bits", vectors[42] > 0, k=5)
    assert hits[0][1] == 0 and "c42" in [hit[0] for hit in hits if hit[1] == 0]
    expected = np.count_nonzero((vectors[42] > 0) != (vectors[43] > 0))
    distance = db.execute(
        "SELECT embedding <~> (SELECT embedding FROM t_bits WHERE id = 'c43') FROM t_bits WHERE id = 'c42'"
    ).fetchone()[0]
    assert distance == expected


def test_index_change_rebuilds_only_the_index(db, corpus):
    folder, chunks, _ = corpus
    load_table(db, "t_idx", folder / "embeddings_synthetic_float32.parquet", chunks)
    oid = table_oid(db, "t_idx")
    first = build_index(db, "t_idx", IndexSettings(ef_construction=32), BUILD)
    assert "ef_construction='32'" in first["definition"] and first["rebuilt"]
    same = build_index(db, "t_idx", IndexSettings(ef_construction=32, ef_search=80), BUILD)
    assert not same["rebuilt"] and same["search_settings"] == {"hnsw.ef_search": 80}
    second = build_index(db, "t_idx", IndexSettings(ef_construction=48), BUILD)
    assert "ef_construction='48'" in second["definition"] and second["rebuilt"]
    ivf = build_index(db, "t_idx", IndexSettings(method="ivfflat", lists=4, probes=4), BUILD)
    assert "ivfflat" in ivf["definition"] and ivf["recall_at_10"]["ivfflat.probes"] == 4
    assert ivf["recall_at_10"]["recall"] == 1.0  # every list probed: exact
    assert table_oid(db, "t_idx") == oid
    assert 0.8 <= first["recall_at_10"]["recall"] <= 1.0


def test_large_float32_gets_a_halfvec_expression_index(db, tmp_path):
    chunks, vectors = synthetic_corpus(tmp_path, 200, 2560)
    load_table(db, "t_qwen", tmp_path / "embeddings_synthetic_float32.parquet", chunks)
    facts = build_index(db, "t_qwen", IndexSettings(recall_sample=20), BUILD)
    assert "(embedding)::halfvec(2560)" in facts["definition"] and "halfvec_ip_ops" in facts["definition"]
    the_plan = plan(db, "t_qwen")
    hits = search(db, the_plan, "t_qwen", vectors[9], k=1, settings={"enable_seqscan": "off"})
    assert hits[0][0] == "c9"
    with db.transaction():
        db.execute("SET LOCAL enable_seqscan = off")
        from embedflow.search import query_value, search_sql

        explain = db.execute(
            b"EXPLAIN " + search_sql(the_plan, "t_qwen").as_bytes(db),
            {"query": query_value(the_plan.column, vectors[9]), "k": 1, "candidates": 1},
        ).fetchall()
    assert "t_qwen_embedding_idx" in " ".join(row[0] for row in explain)
    with pytest.raises(ConfigError, match="at most 2000 dims of vector"):
        build_index(db, "t_qwen", IndexSettings(halfvec_for_large=False), BUILD)


def test_binary_quantize_index_reranks_on_the_full_vector(db, corpus):
    folder, chunks, vectors = corpus
    load_table(db, "t_bq", folder / "embeddings_synthetic_float32.parquet", chunks)
    facts = build_index(db, "t_bq", IndexSettings(binary_quantize=True, rerank_candidates=200), BUILD)
    assert "binary_quantize(embedding))::bit(32)" in facts["definition"]
    hits = search(db, plan(db, "t_bq", IndexSettings(binary_quantize=True)), "t_bq", vectors[5], k=3)
    assert hits[0][0] == "c5" and hits[0][1] == pytest.approx(-1, abs=1e-5)  # re-ranked by inner product


@pytest.mark.parametrize("template", ['x"; DROP TABLE t_float32; --', "{model}-{precision}", "Robert'); DROP", "{nope}"])
def test_hostile_table_names_are_rejected(template):
    with pytest.raises(ConfigError, match="table"):
        table_name(template, "minilm", "float32")


def test_killed_copy_leaves_the_previous_table_and_no_marker(db, embedded_db, tmp_path):
    chunks, _ = synthetic_corpus(tmp_path, 120_000, 64, batch=4000)
    load_table(db, "t_kill", tmp_path / "embeddings_synthetic_float32.parquet", chunks)
    oid = table_oid(db, "t_kill")
    db.execute("DELETE FROM t_kill WHERE id <> 'c1'")  # mark the previous table
    db.commit()
    marker = tmp_path / "marker.json"
    code = "\n".join([
        "from embedflow.database import connect, DatabaseSettings",
        "from embedflow.load import load_table",
        "from embedflow.atomic import write_json",
        f"with connect(DatabaseSettings(pgdata={embedded_db.pgdata!r})) as connection:",
        f"    facts = load_table(connection, 't_kill', {str(tmp_path / 'embeddings_synthetic_float32.parquet')!r}, {str(chunks)!r})",
        f"write_json({str(marker)!r}, facts)",
    ])
    child = subprocess.Popen([sys.executable, "-c", code], cwd=REPO)
    deadline = time.time() + 60
    while time.time() < deadline:
        copying = db.execute("SELECT tuples_processed FROM pg_stat_progress_copy").fetchone()
        db.commit()
        if copying and copying[0] > 1000:
            break
        assert child.poll() is None, "the load ended before it could be killed"
        time.sleep(0.05)
    else:
        pytest.fail("no COPY seen")
    child.send_signal(signal.SIGKILL)
    child.wait()
    time.sleep(0.5)  # the server notices the dropped connection and rolls back
    assert not marker.exists()
    assert table_oid(db, "t_kill") == oid
    assert db.execute("SELECT count(*) FROM t_kill").fetchone()[0] == 1
    assert db.execute("SELECT to_regclass('t_kill__staging')").fetchone()[0] is None


def test_dsn_server_with_password_never_leaks_it(password_server, corpus, monkeypatch, tmp_path, caplog):
    dsn, password = password_server
    folder, chunks, _ = corpus
    monkeypatch.setenv("EMBEDFLOW_TEST_DSN", dsn)
    settings = DatabaseSettings(dsn_env="EMBEDFLOW_TEST_DSN")
    with caplog.at_level("DEBUG"), connect(settings) as connection:
        facts = load_table(connection, "remote_float32", folder / "embeddings_synthetic_float32.parquet", chunks)
        index = build_index(connection, "remote_float32", IndexSettings(), BUILD)
    assert facts["rows"] == 600 and index["recall_at_10"]["recall"] > 0.8
    target = describe_target(settings)
    assert "127.0.0.1" in target["dsn"] and password not in json.dumps(target)
    assert password not in caplog.text
    monkeypatch.setenv("EMBEDFLOW_TEST_DSN", dsn.replace(password, password + "-wrong"))
    with pytest.raises(UserError) as failure:
        with connect(settings):
            pass
    assert "cannot connect" in str(failure.value) and password not in str(failure.value)


def test_unset_dsn_variable_is_named(monkeypatch):
    monkeypatch.delenv("EMBEDFLOW_NOT_SET", raising=False)
    with pytest.raises(ConfigError, match="EMBEDFLOW_NOT_SET, which is not set"):
        with connect(DatabaseSettings(dsn_env="EMBEDFLOW_NOT_SET")):
            pass


def test_embedded_server_listens_only_on_a_private_unix_socket(db):
    listen = db.execute("SHOW listen_addresses").fetchone()[0]
    socket_dir = db.execute("SHOW unix_socket_directories").fetchone()[0]
    assert listen == ""
    assert not os.stat(socket_dir).st_mode & 0o002  # not world-writable


def test_check_reports_drift_of_tables_and_indexes(db, embedded_db, corpus, tmp_path):
    from embedflow.atomic import write_json
    from embedflow.check import check_all, invalidate

    folder, chunks, _ = corpus
    target = describe_target(embedded_db)
    markers = tmp_path / "db"
    for name in ("t_drift_a", "t_drift_b"):
        write_json(markers / f"{name}.loaded.json",
                   {**load_table(db, name, folder / "embeddings_synthetic_float32.parquet", chunks), "database": target})
        write_json(markers / f"{name}.index.json",
                   {**build_index(db, name, IndexSettings(recall_sample=5), BUILD), "database": target})
    write_json(markers / "other.loaded.json", {"table": "elsewhere", "database": {"kind": "dsn"}})
    checked, drift = check_all(db, markers, target)
    assert len(checked) == 4 and drift == []

    db.execute("DROP TABLE t_drift_a")
    db.execute("DROP INDEX t_drift_b_embedding_idx")
    db.commit()
    checked, drift = check_all(db, markers, target)
    problems = {(item.marker.name, item.problem) for item in drift}
    assert ("t_drift_a.loaded.json", "the table is missing") in problems
    assert ("t_drift_a.index.json", "the index t_drift_a_embedding_idx is missing") in problems
    assert ("t_drift_b.index.json", "the index t_drift_b_embedding_idx is missing") in problems
    assert not any(name == "t_drift_b.loaded.json" for name, _ in problems)
    for path in {item.marker for item in drift}:
        invalidate(path)
    assert sorted(p.name for p in markers.iterdir()) == ["other.loaded.json", "t_drift_b.loaded.json"]
