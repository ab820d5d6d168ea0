"""The serving table against the embedded PostgreSQL + pgvector: diff loads, full reloads
built with their index and swapped in, the plan that predicts them, and readers throughout."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading

import numpy as np
import pytest
import yaml

from conftest import INDEX_BUILD, REPO, search_plan, table_oid, write_chunks
from embedflow.atomic import write_json
from embedflow.check import check_all
from embedflow.chunks import iter_chunks
from embedflow.config_file import load_config
from embedflow.database import describe_target
from embedflow.embeddings_file import EmbeddingsMetadata, EmbeddingsWriter
from embedflow.hashing import sha256_text
from embedflow.index import IndexSettings, build_index, index_name
from embedflow.load import load_table
from embedflow.provenance import provenance_path
from embedflow.search import query_value, search, search_sql
from embedflow.serving import ServingSettings
from embedflow.table_plan import (
    parquet_row_hashes,
    plan_beside_outcome,
    plan_servable_tables,
    plan_table,
    record_hashes,
)
from test_load import _backend_exists, _copy_writing_rows, _poll

SERVING = ServingSettings(index=IndexSettings(), build=INDEX_BUILD)


def unit_vectors(rng, rows: int, dim: int) -> np.ndarray:
    vectors = rng.normal(size=(rows, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def write_corpus(folder, chunks: list[dict], vectors: np.ndarray, suffix: str = ".jsonl"):
    """A chunks file (JSON Lines, or a JSON array) and its float32 embeddings file, which names
    the chunks file's sha256 as embed's do; returns (chunks path, Parquet path)."""
    from embedflow.hashing import sha256_file

    chunks_path = write_chunks(folder / f"chunks{suffix}", chunks)
    return chunks_path, write_embeddings(folder / "embeddings.parquet", sha256_file(chunks_path), chunks, vectors)


def write_embeddings(parquet, corpus_sha256: str, chunks: list[dict], vectors: np.ndarray):
    meta = EmbeddingsMetadata("synthetic", "none", vectors.shape[1], "float32", True, "float32", "content",
                              corpus_sha256)
    with EmbeddingsWriter(parquet, meta) as writer:
        for start in range(0, len(chunks), 5000):
            part = chunks[start:start + 5000]
            writer.write([c["id"] for c in part], vectors[start:start + 5000], [sha256_text(c["content"]) for c in part])
    return parquet


def indexed(chunks_path, index):
    """Rule preflight's records index of ``chunks_path``, written at ``index``."""
    from embedflow.chunks import validate_chunks
    from embedflow.records_file import RecordsWriter

    with RecordsWriter(index) as records:
        records.corpus_sha256 = validate_chunks(chunks_path, accepted=records.add).sha256
    return index


def corpus(rows: int, dim: int, seed: int = 0) -> tuple[list[dict], np.ndarray]:
    chunks = [{"id": f"c{i}", "content": f"chunk number {i}", "module": "m", "n": i} for i in range(rows)]
    return chunks, unit_vectors(np.random.default_rng(seed), rows, dim)


def edited(chunks: list[dict], vectors: np.ndarray, changed, deleted, added: int):
    """The corpus with new texts (and vectors) for ``changed``, without ``deleted``, plus ``added`` chunks."""
    rng = np.random.default_rng(99)
    chunks, vectors = [dict(c) for c in chunks], vectors.copy()
    for i in changed:
        chunks[i]["content"] += " (edited)"
        vectors[i] = unit_vectors(rng, 1, vectors.shape[1])[0]
    keep = [i for i in range(len(chunks)) if i not in deleted]
    new = [{"id": f"new{i}", "content": f"a new chunk {i}", "module": "m", "n": -i} for i in range(added)]
    return [chunks[i] for i in keep] + new, np.vstack([vectors[keep], unit_vectors(rng, added, vectors.shape[1])])


def row_versions(db, table: str) -> dict[str, str]:
    """id → xmin, the transaction that last wrote the row: unchanged rows keep theirs."""
    rows = dict(db.execute(f"SELECT id, xmin::text FROM {table}").fetchall())
    db.commit()
    return rows


def index_oid(db, table: str):
    return table_oid(db, index_name(table))


def untouched_query(old: np.ndarray, new: np.ndarray, new_ids: list[str], touched: set[str], k: int = 10) -> int:
    """A row of ``old`` whose k nearest rows, in the old corpus (ids c<i>) and in the new one,
    are none of ``touched``."""
    old_ids = [f"c{i}" for i in range(len(old))]
    for row in range(len(old)):
        if all(not {ids[i] for i in np.argsort(-(vectors @ old[row]))[:k]} & touched
               for vectors, ids in ((old, old_ids), (new, new_ids))):
            return row
    raise AssertionError("no query untouched by the edit")


def test_a_corpus_edit_is_applied_as_exactly_its_diff_and_keeps_the_index(db, embedded_db, tmp_path):
    chunks, vectors = corpus(48, 8)  # 3 texts changed, 1 deleted, 2 added: 44 unchanged
    first = write_corpus(tmp_path / "v1", chunks, vectors)
    table = "t_diff"
    load_table(db, table, first[1], first[0], serving=SERVING)
    build_index(db, table, IndexSettings(recall_sample=5), INDEX_BUILD)
    table_before, index_before, versions = table_oid(db, table), index_oid(db, table), row_versions(db, table)

    new_chunks, new_vectors = edited(chunks, vectors, changed=(3, 17, 29), deleted={40}, added=2)
    second = write_corpus(tmp_path / "v2", new_chunks, new_vectors)
    touched = {"c3", "c17", "c29", "c40", "new0", "new1"}
    query = vectors[untouched_query(vectors, new_vectors, [c["id"] for c in new_chunks], touched)]
    plan = search_plan(db, table)
    hits_before = search(db, plan, table, query, k=10)

    predicted = plan_table(record_hashes(iter_chunks(second[0])), db, table)
    exact = plan_table(parquet_row_hashes(second[0], second[1]), db, table)
    facts = load_table(db, table, second[1], second[0], serving=SERVING)

    counts = {"insert": 2, "update": 3, "delete": 1, "keep": 44}
    assert {name: predicted[name] for name in counts} == counts == {name: exact[name] for name in counts}
    assert (predicted["strategy"], predicted["index"]) == ("diff", "kept")
    # the load's provenance shows a saved plan's prediction beside what it did
    saved = write_json(tmp_path / "plan.json", {"corpus": {"sha256": "corpus-2"}, "tables": {table: predicted}})
    assert plan_beside_outcome(table, "corpus-2", facts, saved)["agree"] is True
    assert plan_beside_outcome(table, "another corpus", facts, saved) is None
    assert (facts["strategy"], facts["inserted"], facts["updated"], facts["deleted"], facts["unchanged"]) == (
        "diff", 2, 3, 1, 44)
    assert facts["rows"] == 49 and facts["oid"] == table_before
    assert (table_oid(db, table), index_oid(db, table)) == (table_before, index_before)
    after = row_versions(db, table)
    assert {i for i in after if i in versions and after[i] != versions[i]} == {"c3", "c17", "c29"}
    assert set(versions) - set(after) == {"c40"} and set(after) - set(versions) == {"new0", "new1"}
    assert search(db, plan, table, query, k=10) == hits_before
    content = db.execute(f"SELECT content FROM {table} WHERE id = 'c17'").fetchone()[0]
    db.commit()
    assert content == "chunk number 17 (edited)"
    # embedflow check sees the same table, its rows and the Parquet the registry names
    target = describe_target(embedded_db)
    write_json(tmp_path / "db" / f"{table}.loaded.json", {**facts, "database": target})
    assert check_all(db, tmp_path / "db", target)[1] == []
    # the index rule keeps the index (same definition) and only measures it again
    assert build_index(db, table, IndexSettings(recall_sample=5), INDEX_BUILD)["rebuilt"] is False


def test_a_kept_index_carries_its_recall_until_diffs_change_more_than_the_threshold(db, tmp_path):
    """index.remeasure_recall_above: small diffs add up in the registry; the recall of a kept
    index is carried until they pass the share, then measured again and the count restarts."""
    chunks, vectors = corpus(40, 8)
    table, settings = "t_recall", IndexSettings(recall_sample=5)
    index = lambda threshold: build_index(db, table, settings, INDEX_BUILD, threshold)  # noqa: E731
    version = 0

    def load_edit(changed):
        nonlocal chunks, vectors, version
        chunks, vectors = edited(chunks, vectors, changed=changed, deleted=set(), added=0)
        version += 1
        return load_table(db, table, *reversed(write_corpus(tmp_path / f"v{version}", chunks, vectors)),
                          serving=SERVING)["strategy"]

    load_table(db, table, *reversed(write_corpus(tmp_path / "v0", chunks, vectors)), serving=SERVING)
    first = index(0.05)["recall_at_10"]
    assert "carried" not in first and first["queries"] == 5
    assert load_edit((3,)) == "diff"  # 1 of 40 rows: 2.5 %
    kept = index(0.05)
    assert kept["rebuilt"] is False
    assert kept["recall_at_10"] == {**first, "carried": True, "rows_changed_since": 1}
    assert "carried" not in index(None)["recall_at_10"]  # None: measured at every run
    load_edit((5, 7))  # 2 more since that measurement: 5 %, not more
    assert index(0.05)["recall_at_10"]["rows_changed_since"] == 2
    load_edit((9,))  # 3 of 40: 7.5 %
    assert "carried" not in index(0.05)["recall_at_10"]
    assert index(0.05)["recall_at_10"]["rows_changed_since"] == 0  # measured: the count restarted
    # a full load builds a new table with its index: the index rule keeps that index, and
    # measures it, since no measurement is of it
    assert load_edit(tuple(range(40))) == "full"
    after_full = index(0.05)
    assert after_full["rebuilt"] is False and "carried" not in after_full["recall_at_10"]
    # other search settings than it was measured with: measured again
    assert "carried" not in build_index(db, table, IndexSettings(recall_sample=5, ef_search=20), INDEX_BUILD,
                                        0.05)["recall_at_10"]


def test_the_plan_of_a_workflow_config_names_each_servable_table(db, embedded_db, tmp_path):
    chunks, vectors = corpus(48, 8)
    first = write_corpus(tmp_path / "v1", chunks, vectors)
    # as rule embed leaves it: provenance naming the vector cache's key of the encoder
    write_json(provenance_path(first[1]), {"rule": "embed", "cache": {"identity_key": "encoder-a"}})
    assert load_table(db, "mini_float32", first[1], first[0], serving=SERVING)["identity_key"] == "encoder-a"
    new_chunks, _ = edited(chunks, vectors, changed=(3, 17, 29), deleted={40}, added=2)
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump({
        "chunks": str(write_chunks(tmp_path / "v2" / "chunks.jsonl", new_chunks)),
        "models": {"mini": {"source": "bundled:all-MiniLM-L6-v2", "truncate_dim": 8}},
        "precisions": ["float32", "int8", "binary"],
        "database": {"pgdata": embedded_db.pgdata},
    }))
    config = load_config(config_file)
    float32, binary = plan_servable_tables(config, {"mini": "encoder-a"})  # int8 has no table
    assert {name: float32[name] for name in ("table", "strategy", "insert", "update", "delete", "keep", "index")} == {
        "table": "mini_float32", "strategy": "diff", "insert": 2, "update": 3, "delete": 1, "keep": 44, "index": "kept"}
    assert float32["encoder"] == "the table's encoder"
    assert (binary["table"], binary["strategy"], binary["insert"], binary["index"]) == (
        "mini_binary", "full", 49, "built with the table")
    # Another encoder changes every vector.
    called, binary = plan_servable_tables(config, {"mini": "encoder-b"})
    assert (called["strategy"], called["update"], called["keep"], called["encoder"]) == (
        "full", 47, 0, "another encoder than the table's")
    assert binary["insert"] == 49
    # Other index settings: the diff keeps its rows, and rule index will build the index again.
    config["index"]["m"] = 24
    float32, _ = plan_servable_tables(config, {"mini": "encoder-a"})
    assert (float32["strategy"], float32["index"]) == (
        "diff", "rebuilt by rule index: the live index is not the one the index settings ask for")


def test_a_large_change_or_a_new_column_builds_a_new_table_with_its_index(db, tmp_path):
    chunks, vectors = corpus(50, 8)
    first = write_corpus(tmp_path / "v1", chunks, vectors)
    table = "t_full"
    facts = load_table(db, table, first[1], first[0], serving=SERVING)
    assert (facts["strategy"], facts["inserted"]) == ("full", 50) and "does not exist" in facts["full_load_reason"]
    assert build_index(db, table, IndexSettings(recall_sample=5), INDEX_BUILD)["rebuilt"] is False  # built with it

    _, other_vectors = corpus(50, 8, seed=1)  # 30 of 50 vectors change: 60 %, more than the default's
    other_vectors[30:] = vectors[30:]
    second = write_corpus(tmp_path / "v2", chunks, other_vectors)
    predicted = plan_table(parquet_row_hashes(second[0], second[1]), db, table)
    assert (predicted["strategy"], predicted["update"], predicted["index"]) == ("full", 30, "rebuilt with the new table")
    before = table_oid(db, table)
    db.execute("DO $$ BEGIN CREATE ROLE embedflow_test_reader; EXCEPTION WHEN duplicate_object THEN NULL; END $$")
    db.execute(f"GRANT SELECT ON {table} TO embedflow_test_reader")
    db.commit()
    facts = load_table(db, table, second[1], second[0], serving=SERVING)
    assert (facts["strategy"], facts["updated"], facts["unchanged"]) == ("full", 30, 20)
    granted = db.execute("SELECT has_table_privilege('embedflow_test_reader', %s, 'SELECT')", (table,)).fetchone()[0]
    assert granted  # a search service's grant survives the swap
    assert f"more than database.full_reload_above ({SERVING.full_reload_above:.0%})" in facts["full_load_reason"]
    assert table_oid(db, table) != before and index_oid(db, table) is not None
    assert build_index(db, table, IndexSettings(recall_sample=5), INDEX_BUILD)["rebuilt"] is False
    # the same change under a higher threshold is a diff
    lenient = ServingSettings(index=IndexSettings(), build=INDEX_BUILD, full_reload_above=0.9)
    assert load_table(db, table, first[1], first[0], serving=lenient)["strategy"] == "diff"

    wider = write_corpus(tmp_path / "v3", chunks, corpus(50, 16)[1])
    assert plan_table(record_hashes(iter_chunks(wider[0])), db, table, column_type="vector(16)")["strategy"] == "full"
    facts = load_table(db, table, wider[1], wider[0], serving=SERVING)
    assert facts["strategy"] == "full" and "from vector(8) to vector(16)" in facts["full_load_reason"]
    leftovers = db.execute("SELECT relname FROM pg_class WHERE relname LIKE 't_full%%staging%%'").fetchall()
    db.commit()
    assert leftovers == []


def test_a_changed_model_predicts_every_row_updated(db, tmp_path):
    chunks, vectors = corpus(50, 8)
    first = write_corpus(tmp_path / "v1", chunks, vectors)
    load_table(db, "t_model", first[1], first[0], serving=SERVING)
    plan = plan_table(record_hashes(iter_chunks(first[0])), db, "t_model", vectors_change=True)
    assert (plan["strategy"], plan["update"], plan["keep"]) == ("full", 50, 0)
    same = plan_table(record_hashes(iter_chunks(first[0])), db, "t_model")
    assert (same["strategy"], same["keep"]) == ("diff", 50)


def child_load(embedded_db, table: str, parquet, chunks, marker, paced: str) -> subprocess.Popen:
    """A load in its own process (as rule load runs it), writing its marker after the commit.
    Its rows go to COPY as they would, but ``paced`` (``LoadRows.hashes``: a diff's first
    pass; ``LoadRows.__iter__``: a full load) pauses at every 500th row, so that a test can
    stop it in that COPY whatever the machine's speed."""
    code = "\n".join([
        "import time",
        "import embedflow.load",
        f"unpaced = embedflow.load.LoadRows.{paced}",
        "def paced(self, *args):",
        "    for number, row in enumerate(unpaced(self, *args)):",
        "        if number % 500 == 499:",
        "            time.sleep(0.1)",
        "        yield row",
        f"embedflow.load.LoadRows.{paced} = paced",
        "from embedflow.atomic import write_json",
        "from embedflow.database import DatabaseSettings, connect",
        "from embedflow.index import IndexSettings",
        "from embedflow.load import load_table",
        "from embedflow.serving import ServingSettings",
        f"serving = ServingSettings(index=IndexSettings(), build={INDEX_BUILD!r})",
        f"with connect(DatabaseSettings(pgdata={embedded_db.pgdata!r})) as connection:",
        f"    facts = load_table(connection, {table!r}, {str(parquet)!r}, {str(chunks)!r}, serving=serving)",
        f"write_json({str(marker)!r}, facts)",
    ])
    return subprocess.Popen([sys.executable, "-c", code], cwd=REPO)


def freeze_in_copy(db, child, into: str) -> tuple[int, str]:
    """Stop ``child`` while its COPY into table ``into`` writes rows; (its backend's pid, the
    COPY statement)."""
    backend, _ = _poll(lambda: _copy_writing_rows(db, into), f"its COPY into {into} was seen writing rows", child)
    child.send_signal(signal.SIGSTOP)  # frozen mid-COPY: it can neither finish nor commit
    copying = db.execute(
        "SELECT a.query FROM pg_stat_progress_copy p JOIN pg_stat_activity a USING (pid) WHERE p.pid = %s", (backend,)
    ).fetchone()
    db.commit()
    assert copying is not None, "the COPY ended before the load could be frozen"
    return backend, copying[0]


def test_a_killed_diff_load_leaves_the_table_its_index_and_its_marker(db, embedded_db, tmp_path):
    chunks, vectors = corpus(8000, 8)  # its hashes take long enough to COPY that the load is caught in it
    first = write_corpus(tmp_path / "v1", chunks, vectors)
    table = "t_killdiff"
    facts = load_table(db, table, first[1], first[0], serving=SERVING)
    marker = write_json(tmp_path / f"{table}.loaded.json", facts)
    saved = marker.read_bytes()
    before = table_oid(db, table), index_oid(db, table), row_versions(db, table)
    new_chunks, new_vectors = edited(chunks, vectors, changed=(5,), deleted={7}, added=1)
    second = write_corpus(tmp_path / "v2", new_chunks, new_vectors)
    child = child_load(embedded_db, table, second[1], second[0], marker, paced="hashes")
    try:
        backend, copying = freeze_in_copy(db, child, "embedflow_row_hashes")
        assert copying.startswith('COPY "embedflow_row_hashes"'), copying  # the diff's first pass
        child.kill()
        child.wait()
        _poll(lambda: not _backend_exists(db, backend), "the server ended the killed load's session")
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert marker.read_bytes() == saved
    assert (table_oid(db, table), index_oid(db, table), row_versions(db, table)) == before
    registry = db.execute("SELECT rows, parquet_sha256 FROM embedflow_tables WHERE table_name = %s", (table,)).fetchone()
    db.commit()
    assert registry == (8000, facts["parquet_sha256"])


class Reader(threading.Thread):
    """Asks one query of a table again and again on its own connection, as a search service
    would, recording each answer's ids and the indexes its plan scans."""

    def __init__(self, settings, table: str, vector: np.ndarray, plan):
        super().__init__(daemon=True)
        self.settings, self.table, self.vector, self.plan = settings, table, vector, plan
        self.answers: list[tuple[tuple[str, ...], set[str]]] = []
        self.errors: list[Exception] = []
        self.stop = threading.Event()

    def run(self) -> None:
        from embedflow.database import connect

        params = {"query": query_value(self.plan.column, self.vector), "k": 5, "candidates": 5}
        try:
            with connect(self.settings, autocommit=True) as connection:
                connection.execute("SET hnsw.ef_search = 100")  # on these tables: the exact answer
                statement = search_sql(self.plan, self.table).as_string(connection)
                while not self.stop.is_set():
                    explained = connection.execute("EXPLAIN (FORMAT JSON) " + statement, params).fetchone()[0]
                    ids = tuple(row[0] for row in connection.execute(statement, params).fetchall())
                    self.answers.append((ids, set(_index_names(explained))))
        except Exception as error:  # the test asserts there is none
            self.errors.append(error)

    def after(self, count: int) -> None:
        _poll(lambda: len(self.answers) >= count or self.errors, f"{count} answers from the reader")


def _index_names(node):
    if isinstance(node, dict):
        if "Index Name" in node:
            yield node["Index Name"]
        for value in node.values():
            yield from _index_names(value)
    elif isinstance(node, list):
        for value in node:
            yield from _index_names(value)


def test_readers_see_the_old_table_indexed_until_the_new_one_indexed_replaces_it(db, embedded_db, tmp_path):
    """A full reload and an index rebuild while a reader asks the same query without pause:
    no answer fails, every plan scans the table's index (the planner's own choice), and the
    answers are the old table's until one moment, the new table's after it."""
    rows = 4000  # enough that PostgreSQL's own plan is the HNSW index (at ef_search 100; 1,000 rows are not)
    chunks, old_vectors = corpus(rows, 8)
    _, new_vectors = corpus(rows, 8, seed=1)  # every vector changes: a full reload
    first, second = write_corpus(tmp_path / "v1", chunks, old_vectors), write_corpus(tmp_path / "v2", chunks, new_vectors)
    table = "t_live"
    load_table(db, table, first[1], first[0], serving=SERVING)
    query = unit_vectors(np.random.default_rng(5), 1, 8)[0]
    reader = Reader(embedded_db, table, query, search_plan(db, table))
    reader.start()
    try:
        reader.after(5)
        child = child_load(embedded_db, table, second[1], second[0], tmp_path / "marker.json", paced="__iter__")
        try:
            freeze_in_copy(db, child, f"{table}__staging")  # the new table, built beside the old
            reader.after(len(reader.answers) + 20)  # the new table is being built: the old one answers
            child.send_signal(signal.SIGCONT)
            assert child.wait(timeout=120) == 0
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        reader.after(len(reader.answers) + 5)
        assert build_index(db, table, IndexSettings(m=8, recall_sample=5), INDEX_BUILD)["rebuilt"]
        reader.after(len(reader.answers) + 5)
    finally:
        reader.stop.set()
        reader.join(timeout=60)
    assert reader.errors == []
    old, new = (tuple(f"c{i}" for i in np.argsort(-(vectors @ query))[:5]) for vectors in (old_vectors, new_vectors))
    assert old != new
    assert all(indexes == {index_name(table)} for _, indexes in reader.answers)
    labels = ["old" if ids == old else "new" if ids == new else ids for ids, _ in reader.answers]
    switch = labels.index("new")
    assert labels == ["old"] * switch + ["new"] * (len(labels) - switch) and switch >= 25


ROW_COLUMNS = "id, content, summary, metadata::text, text_sha256, record_sha256, vector_sha256, embedding::text"


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
@pytest.mark.parametrize("keep", [True, False], ids=["kept", "read_again"])
def test_a_diff_load_writes_exactly_what_a_full_load_of_the_same_files_writes(db, tmp_path, monkeypatch, suffix, keep):
    """The rows a diff writes come from its first pass (kept) or are read again by place (all
    of them when nothing may be kept): either way the table ends as a full load makes it."""
    import embedflow.load

    if not keep:
        monkeypatch.setattr(embedflow.load, "KEEP_BYTES", 0)
    chunks, vectors = corpus(300, 8)
    first = write_corpus(tmp_path / "v1", chunks, vectors, suffix)
    new_chunks, new_vectors = edited(chunks, vectors, changed=(0, 150, 299), deleted={7, 8}, added=3)
    new_chunks[42]["summary"] = "metadata only: same text, same vector"
    second = write_corpus(tmp_path / "v2", new_chunks, new_vectors, suffix)
    table = f"t_same_{suffix[1:]}_{'kept' if keep else 'reread'}"
    load_table(db, table, first[1], first[0], serving=SERVING)
    facts = load_table(db, table, second[1], second[0], serving=SERVING)
    assert (facts["strategy"], facts["inserted"], facts["updated"], facts["deleted"]) == ("diff", 3, 4, 2)
    load_table(db, "t_same_full", second[1], second[0], serving=SERVING)
    contents = [db.execute(f"SELECT {ROW_COLUMNS} FROM {name} ORDER BY id").fetchall() for name in (table, "t_same_full")]
    db.commit()
    assert len(contents[0]) == 301 and contents[0] == contents[1]


def test_a_diff_refuses_rows_whose_ids_are_not_unique(db, tmp_path):
    from embedflow.errors import UserError
    from embedflow.table_plan import diff_changes, stage_hashes

    chunks, vectors = corpus(20, 8)
    first = write_corpus(tmp_path / "v1", chunks, vectors)
    load_table(db, "t_twice", first[1], first[0], serving=SERVING)
    hashes = list(parquet_row_hashes(*first))
    with db.transaction(force_rollback=True), db.cursor() as cursor:
        staged = stage_hashes(cursor, hashes + [hashes[3]])
        with pytest.raises(UserError, match="do not have unique ids"):
            diff_changes(cursor, "t_twice", staged, 0.5)


def test_staged_hashes_are_the_rows_given_in_their_order(db):
    """The block-written binary COPY: ids beyond ASCII, a missing vector hash (a plan's rows)."""
    from embedflow.table_plan import HASHES_TABLE, stage_hashes

    rows = [(f"sdk.ünï.{i}" if i % 3 else "", bytes([i % 256]) * 32, None if i % 2 else bytes([255 - i % 256]) * 32)
            for i in range(5000)]
    with db.transaction(force_rollback=True), db.cursor() as cursor:
        assert stage_hashes(cursor, iter(rows)) == len(rows)
        staged = cursor.execute(f"SELECT id, record_sha256, vector_sha256, row_number FROM {HASHES_TABLE} "
                                "ORDER BY row_number").fetchall()
    assert staged == [(*row, number) for number, row in enumerate(rows)]


def test_the_records_index_gives_the_hashes_parsing_gives_when_the_parquet_leaves_chunks_out(tmp_path, monkeypatch):
    """The load's first pass from the records index (``LoadRows.hashes``): index batches
    smaller than the Parquet's, read across their edges, and a Parquet that leaves runs of
    indexed chunks out, passed over; then an id the index does not hold, named."""
    from embedflow import records_file
    from embedflow.errors import InputError
    from embedflow.hashing import sha256_file
    from embedflow.load import LoadRows

    monkeypatch.setattr(records_file, "BATCH_ROWS", 7)
    chunks, vectors = corpus(60, 8)
    chunks_path = write_chunks(tmp_path / "chunks.jsonl", chunks)
    corpus_sha256 = sha256_file(chunks_path)
    index = indexed(chunks_path, tmp_path / "index.parquet")
    embedded = [i for i in range(60) if i % 9 not in (2, 3) and i != 59]
    parquet = write_embeddings(tmp_path / "part.parquet", corpus_sha256, [chunks[i] for i in embedded],
                               vectors[embedded])
    parsed = LoadRows(chunks_path, parquet, "float32", 8)
    from_index = LoadRows(chunks_path, parquet, "float32", 8, records=index, corpus_sha256=corpus_sha256)
    assert from_index.records is not None and parsed.records is None
    hashes = list(from_index.hashes())
    assert [row_id for row_id, _, _ in hashes] == [chunks[i]["id"] for i in embedded]
    assert hashes == list(parsed.hashes()) and from_index.places == parsed.places

    stranger = write_embeddings(tmp_path / "stranger.parquet", corpus_sha256,
                                chunks[:3] + [{"id": "nowhere", "content": "x"}], vectors[:4])
    rows = LoadRows(chunks_path, stranger, "float32", 8, records=index, corpus_sha256=corpus_sha256)
    with pytest.raises(InputError, match="stranger.parquet: id 'nowhere' is not in .*chunks.jsonl"):
        list(rows.hashes())


def test_a_table_with_a_row_whose_hash_is_cut_short_is_refused_a_diff(db, tmp_path):
    from embedflow.errors import UserError

    chunks, vectors = corpus(20, 8)
    first = write_corpus(tmp_path / "v1", chunks, vectors)
    load_table(db, "t_unhashed", first[1], first[0], serving=SERVING)
    db.execute("UPDATE t_unhashed SET vector_sha256 = ''::bytea WHERE id = %s", (chunks[5]["id"],))
    db.commit()
    with pytest.raises(UserError, match="t_unhashed: a row has no record or vector hash"):
        load_table(db, "t_unhashed", first[1], first[0], serving=SERVING)


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_a_diff_load_from_preflights_records_index_writes_what_one_that_parses_writes(db, tmp_path, suffix):
    chunks, vectors = corpus(300, 8)
    first = write_corpus(tmp_path / "v1", chunks, vectors, suffix)
    new_chunks, new_vectors = edited(chunks, vectors, changed=(1, 100, 298), deleted={50}, added=2)
    second = write_corpus(tmp_path / "v2", new_chunks, new_vectors, suffix)
    stale = indexed(first[0], tmp_path / "v1" / "index.parquet")
    fresh = indexed(second[0], tmp_path / "v2" / "index.parquet")
    tables = {f"t_{kind}_{suffix[1:]}": records for kind, records in (("indexed", fresh), ("parsed", None),
                                                                        ("stale", stale))}
    for table, records in tables.items():
        assert load_table(db, table, first[1], first[0], serving=SERVING)["strategy"] == "full"
        facts = load_table(db, table, second[1], second[0], serving=SERVING, records=records)
        assert (facts["strategy"], facts["inserted"], facts["updated"], facts["deleted"]) == ("diff", 2, 3, 1)
        assert facts["records_index_used"] is (records == fresh)  # a stale index is not trusted
    contents = [db.execute(f"SELECT {ROW_COLUMNS} FROM {name} ORDER BY id").fetchall() for name in tables]
    db.commit()
    assert len(contents[0]) == 301 and contents[0] == contents[1] == contents[2]
