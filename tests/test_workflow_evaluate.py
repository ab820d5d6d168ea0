"""The bundled example evaluated end to end by Snakemake: the session ``example`` run
(tests/conftest.py)."""

from __future__ import annotations

import json


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
        path for folder in ("embeddings", "embeddings/shards/minilm", "verify", "db", "eval", "reduce")
        for path in example.path(f"results/{folder}").iterdir()
        if path.is_file() and not path.name.endswith(".provenance.json") and not path.name.startswith(".")
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
