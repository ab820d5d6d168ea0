"""embedflow.decision: the Pareto front, the rule that recommends, the bootstrap, and the sizing
that the extrapolations use (the example's decision report: test_workflow_decision.py)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from embedflow.decision.choose import paired_bootstrap, pareto_front, recommend
from embedflow.decision.sizing import datum_bytes, hnsw_element_bytes


def _row(name, ndcg, storage, p95=1.0, setting=40, per_query=None):
    return {"id": name, "ndcg@10": ndcg, "storage_bytes": storage, "p95_ms": p95, "setting": {"hnsw.ef_search": setting},
            "fails": [], "_per_query": per_query or {}}


def test_pareto_front_keeps_only_the_undominated():
    rows = [_row("a", 0.7, 10), _row("b", 0.6, 5), _row("c", 0.65, 12), _row("d", 0.7, 11), _row("e", 0.5, 5)]
    assert [row["id"] for row in pareto_front(rows, "storage_bytes")] == ["b", "a"]


def test_the_rule_takes_the_least_storage_then_quality_then_the_smaller_setting():
    rows = [_row("big", 0.9, 100), _row("small40", 0.8, 10, setting=40), _row("small20", 0.8, 10, setting=20),
            _row("small_worse", 0.7, 10, setting=20)]
    assert recommend(rows)["id"] == "small20"
    rows[2]["fails"] = [{"budget": "p95"}]
    assert recommend(rows)["id"] == "small40"


def test_paired_bootstrap_separates_a_real_loss_from_noise():
    rng = np.random.default_rng(0)
    queries = [f"q{i}" for i in range(40)]
    best = rng.uniform(0.3, 1, size=40)
    noisy = best + rng.normal(0, 0.02, size=40)  # differs per query, not on average
    worse = best - 0.15
    rows = [_row(name, float(np.mean(v)), 1, per_query=dict(zip(queries, v)))
            for name, v in (("best", best), ("noisy", noisy), ("worse", worse))]
    paired_bootstrap(rows, rows[0], resamples=1000, seed=0)
    assert rows[0]["vs_best"] == {"difference": 0.0, "low": 0.0, "high": 0.0, "indistinguishable": True, "queries": 40}
    assert rows[1]["vs_best"]["indistinguishable"] and rows[1]["vs_best"]["low"] < 0 < rows[1]["vs_best"]["high"]
    assert not rows[2]["vs_best"]["indistinguishable"] and rows[2]["vs_best"]["high"] < -0.1


def test_hnsw_build_memory_rule_predicts_pgvectors_own_notice(db, tmp_path):
    """pgvector leaves the in-memory build when its graph reaches maintenance_work_mem, and says after how
    many tuples; the per-element rule the extrapolations use predicts that count."""
    from conftest import synthetic_corpus
    from embedflow.load import load_table

    chunks, _ = synthetic_corpus(tmp_path, 2500, 384)
    load_table(db, "memory_rule", tmp_path / "embeddings_synthetic_float32.parquet", chunks)
    notices = []
    db.add_notice_handler(lambda diagnostic: notices.append(diagnostic.message_primary))
    with db.transaction():
        db.execute("SET LOCAL maintenance_work_mem = '4MB'")
        db.execute("SET LOCAL max_parallel_maintenance_workers = 0")
        db.execute("CREATE INDEX ON memory_rule USING hnsw (embedding vector_ip_ops) WITH (m = 16)")
        db.execute("DROP TABLE memory_rule")
    found = [int(m.group(1)) for n in notices if (m := re.search(r"no longer fits .* after (\d+) tuples", n))]
    assert found, notices
    predicted = 4 * 2**20 / hnsw_element_bytes(16, datum_bytes("vector", 384))
    assert found[0] == pytest.approx(predicted, rel=0.02), (found, predicted)
