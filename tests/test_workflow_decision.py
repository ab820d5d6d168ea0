"""The decision report on the bundled example: servable candidates measured through SQL, budgets,
and pasteable DDL. The tests read the session ``example`` run (tests/conftest.py), whose default
target includes rules ``sweep`` and ``decision``."""

from __future__ import annotations

import json
import re
from collections import Counter

import numpy as np


def decision_of(example) -> dict:
    return json.loads(example.path("results/eval/decision.json").read_text())


def sweep_of(example, table: str) -> dict:
    return json.loads(example.path(f"results/eval/{table}.sweep.json").read_text())


def test_example_recommends_a_servable_configuration_within_the_budgets(example):
    decision = decision_of(example)
    budget = example.config["decision"]["budget"]
    chosen = decision["recommendation"]
    assert chosen is not None, decision["failure"]
    assert chosen["precision"] != "int8" and chosen["column_type"].split("(")[0] in ("vector", "halfvec", "bit")
    assert chosen["uses_index"] and chosen["fails"] == []
    assert chosen["storage_bytes"] / 2**30 <= budget["max_storage_gib"]
    assert chosen["p95_ms"] <= budget["max_p95_ms"]
    best = max(c["ndcg@10"] for c in decision["candidates"] if c["uses_index"])
    assert chosen["ndcg@10"] >= budget["min_ndcg_share"] * best
    # every kind of candidate was measured, and int8 is listed as a Parquet artifact only
    kinds = {(c["column_type"].split("(")[0], c["method"], c["binary_quantize"]) for c in decision["candidates"]}
    assert {("vector", "hnsw", False), ("vector", "hnsw", True), ("vector", "ivfflat", False),
            ("halfvec", "hnsw", False), ("bit", "hnsw", False), ("bit", "ivfflat", False)} <= kinds
    assert {c["setting_label"] for c in decision["candidates"] if c["method"] == "hnsw"} == {
        f"ef_search={v}" for v in (20, 40, 100, 200)}
    assert {p["model"] for p in decision["parquet_only"]} == set(example.config["models"])
    assert all(c["precision"] != "int8" for c in decision["candidates"])
    # the report says it, with the SQL to paste, and the summary links to it
    report = example.path("results/eval/decision.md").read_text()
    assert f"**Serve `{chosen['id']}`**" in report
    sql = chosen["sql"]
    assert sql in report
    for part in ("CREATE TABLE", '"metadata" jsonb', "CREATE INDEX", ") WITH (", "SET ", "PREPARE nearest(",
                 "ORDER BY", "LIMIT 10"):
        assert part in sql, part
    assert "pgvector has no int8 type" in report and "[decision.md](decision.md)" in example.path(
        "results/eval/summary.md").read_text()
    assert example.path("results/eval/decision_pareto.png").read_bytes()[:4] == b"\x89PNG"


def test_the_sql_builds_the_same_index_on_a_fresh_table(example):
    """The recommended SQL block, and that of every index of the float32 table (the binary re-rank form
    too), pasted into a fresh schema: pg_get_indexdef equals what the sweep built, the prepared query
    answers, and the sweep's HNSW equals the one rule index built."""
    from embedflow.database import DatabaseSettings, connect
    from embedflow.decision.candidates import serving_sql

    chosen = decision_of(example)["recommendation"]
    blocks = [(chosen["table"], chosen["sql"], chosen["definition"])]
    float32 = sweep_of(example, "minilm_float32")
    blocks += [("minilm_float32", serving_sql({**float32, **index}, index["searches"][0]["setting"], None),
                index["definition"]) for index in float32["indexes"]]
    with connect(DatabaseSettings(pgdata=str(example.path("results/pgdata"))), autocommit=True) as connection:
        try:
            for table, block, definition in blocks:
                connection.execute("DROP SCHEMA IF EXISTS decision_check CASCADE")
                connection.execute("CREATE SCHEMA decision_check")
                connection.execute("SET search_path = decision_check, public")
                create_table, *rest = [s for s in block.split(";\n") if s.strip() and not _only_comments(s)]
                connection.execute(create_table)
                connection.execute(f'INSERT INTO "{table}" SELECT * FROM public."{table}"')  # "load the rows first"
                for statement in rest:
                    connection.execute(statement)
                fresh = connection.execute(
                    "SELECT pg_get_indexdef(%s::regclass)", (f"decision_check.{table}_embedding_idx",)).fetchone()[0]
                assert fresh.replace("decision_check.", "embedflow_sweep.") == definition
                vector = _query_vector(example, model=table.rsplit("_", 1)[0])
                hits = connection.execute(f"EXECUTE nearest('{_literal(vector, block)}')").fetchall()  # as pasted
                assert len(hits) == 10, block
                connection.execute("DEALLOCATE nearest")
        finally:
            connection.execute("DROP SCHEMA IF EXISTS decision_check CASCADE")
    built = json.loads(example.path("results/db/minilm_float32.index.json").read_text())["definition"]
    plain_hnsw = next(i for i in float32["indexes"] if i["settings"]["method"] == "hnsw" and not i["binary_quantize"])
    assert plain_hnsw["definition"] == built.replace("public.", "embedflow_sweep.")


def _only_comments(statement: str) -> bool:
    return all(not line.strip() or line.lstrip().startswith("--") for line in statement.splitlines())


def _query_vector(example, model: str) -> np.ndarray:
    from embedflow.embeddings_file import read_all

    return read_all(example.path(f"results/eval/{model}.queries.parquet"))[1].vectors[0]


def _literal(vector: np.ndarray, block: str) -> str:
    """The query as a literal of the prepared statement's type (bit: the sign bits)."""
    if "PREPARE nearest(bit(" in block:
        return "".join("1" if value > 0 else "0" for value in vector)
    return "[" + ",".join(f"{value:.8f}" for value in vector) + "]"


def test_binary_rerank_keeps_98_percent_of_float32(example):
    shares = {s["id"]: s for s in decision_of(example)["binary_rerank"]}
    rerank = shares["minilm/float32/hnsw+binary_quantize/ef_search=40"]
    assert rerank["against"] == "minilm/float32/hnsw/ef_search=40"
    print(f"binary_quantize + re-rank: nDCG@10 {rerank['ndcg@10']:.3f} = {rerank['share']:.1%} of float32 HNSW "
          f"({rerank['against_ndcg@10']:.3f}), {rerank['share_of_exact']:.1%} of exact float32")
    assert rerank["share"] >= 0.98 and rerank["share_of_exact"] >= 0.98
    assert "## binary_quantize with re-ranking" in example.path("results/eval/decision.md").read_text()


def test_a_budget_reruns_only_the_decision_and_one_too_tight_says_what_failed(example):
    from conftest import job_counts

    original = example.config
    tight = json.loads(json.dumps(original))
    tight["decision"]["budget"]["max_storage_gib"] = 0.001
    example.set_config(tight)
    try:
        assert job_counts(example.snakemake("--dry-run").stdout) == Counter(decision=1)
        example.snakemake("--cores", "1")
        decision = decision_of(example)
        assert decision["recommendation"] is None
        failure = "\n".join(decision["failure"])
        eligible = sum(c["uses_index"] and not c["exhaustive"] for c in decision["candidates"])
        assert f"storage at 10,000,000 rows ≤ 0.001 GiB: {eligible} of {eligible} fail" in failure
        assert re.search(r"p95 latency ≤ 50 ms: \d+ of", failure) and "nDCG@10 ≥ 0.98 × best" in failure
        report = example.path("results/eval/decision.md").read_text()
        assert "No configuration meets every budget." in report and "Serve `" not in report
    finally:
        example.set_config(original)
    example.snakemake("--cores", "1")
    assert decision_of(example)["recommendation"] is not None


def test_the_snakemake_report_shows_the_decision(example):
    example.snakemake("--report", "decision_report.html")
    html = example.path("decision_report.html").read_text()
    assert "decision_pareto.png" in html and "decision.md" in html
    assert "the configuration the budgets recommend" in html  # the plot's caption
