"""Evaluation: rankings agree with brute force, and the bundled example is evaluated end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import synthetic_corpus
from embedflow.evaluate import answerable, exact_rankings
from embedflow.vectors import RunningTopK


def test_running_top_k_equals_a_full_sort():
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(3, 50))
    ids = [f"d{i}" for i in range(50)]
    top = RunningTopK(3, 7)
    for start in range(0, 50, 9):
        top.add(scores[:, start : start + 9], ids[start : start + 9])
    for row in range(3):
        assert list(top.ids[row]) == [ids[i] for i in np.argsort(-scores[row], kind="stable")[:7]]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("eval")
    _, vectors = synthetic_corpus(folder, 500, 24, precisions=("float32", "float16", "int8", "binary"), batch=128)
    return folder, vectors


def brute_force(scores, k=10):
    return [[f"c{i}" for i in np.argsort(-row, kind="stable")[:k]] for row in scores]


def test_exact_rankings_match_brute_force(corpus):
    folder, vectors = corpus
    queries = vectors[[3, 77, 410]] + 0.01
    ids = ["a", "b", "c"]
    float32 = exact_rankings(folder / "embeddings_synthetic_float32.parquet", ids, queries)
    assert list(float32.values()) == brute_force(queries @ vectors.T)
    bits = (vectors > 0).astype(int)
    hamming = -(np.abs((queries > 0).astype(int)[:, None, :] - bits[None]).sum(-1))
    binary = exact_rankings(folder / "embeddings_synthetic_binary.parquet", ids, queries)
    for got, row in zip(binary.values(), hamming):
        expected_distance = sorted(-row)[:10]
        got_distance = [-row[int(chunk[1:])] for chunk in got]
        assert got_distance == expected_distance  # ties may order differently; distances may not
    rescored = exact_rankings(folder / "embeddings_synthetic_binary.parquet", ids, queries, rescore=50)
    assert [ranked[0] for ranked in rescored.values()] == ["c3", "c77", "c410"]
    int8 = exact_rankings(folder / "embeddings_synthetic_int8.parquet", ids, queries)
    assert [ranked[0] for ranked in int8.values()] == ["c3", "c77", "c410"]


def test_queries_without_embedded_relevant_chunks_are_left_out():
    ids, queries, relevant, skipped = answerable(
        ["q1", "q2"], np.zeros((2, 4)), {"q1": {"a", "z"}, "q2": {"y"}}, {"a", "b"}
    )
    assert ids == ["q1"] and relevant == {"q1": {"a"}} and skipped == ["q2"] and queries.shape == (1, 4)


def test_example_is_evaluated_for_every_precision(example):
    summary = example.path("results/eval/summary.md").read_text()
    table = summary.split("## Quality against dimension")[0]
    rows = [line for line in table.splitlines() if line.startswith("| minilm |")]
    assert [row.split("|")[2].strip() for row in rows] == ["float32", "float16", "int8", "binary"]
    assert "Best quality per byte:" in summary
    float32 = json.loads(example.path("results/eval/minilm_float32.json").read_text())
    assert float32["queries"] == 40 and float32["rows"] == 350
    # the index answers as exact search does on 350 rows, and quality is far above chance (10/350)
    assert float32["pgvector"]["ann_recall@10"] >= 0.95
    assert float32["exact"]["recall@10"] > 0.3
    binary = json.loads(example.path("results/eval/minilm_binary.json").read_text())
    assert binary["parquet_bytes_per_vector"] < float32["parquet_bytes_per_vector"] / 8
    for plot in ("quality_vs_bytes", "quality_vs_latency", "quality_vs_dim"):
        assert example.path(f"results/eval/{plot}.png").read_bytes()[:4] == b"\x89PNG"


REQUIRED = ("output", "rule", "wildcards", "config", "inputs", "software", "device", "timing", "workflow")


def test_every_output_has_true_provenance(example):
    from embedflow.hashing import sha256_file
    from embedflow.provenance import file_record

    outputs = [
        path for folder in ("embeddings", "verify", "db", "eval", "reduce")
        for path in example.path(f"results/{folder}").iterdir()
        if not path.name.endswith(".provenance.json") and not path.name.startswith(".")
    ]
    assert len(outputs) > 20
    rules = set()
    for path in outputs:
        record = json.loads(path.with_name(path.name + ".provenance.json").read_text())
        assert all(field in record for field in REQUIRED), path
        assert record["output"]["sha256"] == sha256_file(path), path
        rules.add(record["rule"])
        for item in record["inputs"]:
            source = example.path(item["path"]) if not item["path"].startswith("/") else item["path"]
            assert file_record(source)["sha256"] == item["sha256"], (path, item["path"])  # a file or a model folder
        assert record["software"]["snakemake"] and record["software"]["python"]
    assert {"embed", "convert", "probe", "measure", "verify", "load", "index", "encode_queries", "evaluate",
            "eval_summary", "fit_pca", "project"} <= rules
    embed = json.loads(example.path("results/embeddings/embeddings_minilm_float32.parquet.provenance.json").read_text())
    # the provenance alone says which config slice made the file
    assert embed["config"]["model"]["source"] == "bundled:all-MiniLM-L6-v2"
    assert embed["config"]["selection"] == {"text_field": "content"}
    index = json.loads(example.path("results/db/minilm_float32.index.json.provenance.json").read_text())
    assert index["config"]["index"]["method"] == "hnsw" and index["config"]["table"] == "minilm_float32"


def test_report_holds_verify_reports_and_evaluation_plots(example):
    example.snakemake("--report", "report.html")
    html = example.path("report.html").read_text()
    assert "quality_vs_bytes.png" in html and "quality_vs_latency.png" in html
    assert "minilm_int8.md" in html and "Verify" in html
    assert "against bytes per vector in the Parquet file" in html  # a caption
