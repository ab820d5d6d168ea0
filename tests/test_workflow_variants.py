"""The example's variants of minilm (truncation, PCA, projection head), run by Snakemake: the
session ``example`` run (tests/conftest.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import yaml

from conftest import REPO
from embedflow.embeddings_file import read_all
from embedflow.query_set import read_queries
from embedflow.variants import resolve

VARIANTS = {"minilm_trunc128": "truncate_dim", "minilm_pca128": "pca", "minilm_head128": "projection_head"}


def test_each_variant_has_its_dimension_in_every_precision_and_passes_verify(example):
    precisions = example.config["precisions"]
    for model in VARIANTS:
        for precision in precisions:
            path = example.path(f"results/embeddings/embeddings_{model}_{precision}.parquet")
            meta, batch = read_all(path)
            assert meta.dim == 128 and meta.reduction == {"base": "minilm", "way": VARIANTS[model], "dim": 128}
            assert len(batch.ids) == 350
            if precision == "float32":
                assert batch.vectors.shape == (350, 128)
                np.testing.assert_allclose(np.linalg.norm(batch.vectors, axis=1), 1, atol=1e-5)
            report = json.loads(example.path(f"results/verify/{model}_{precision}.json").read_text())
            assert report["status"] in ("pass", "warn"), (model, precision, report["status"])
        # the variant's probes (rule probe for the head; project_probes, the base's probes
        # reduced, for truncation and PCA) give the stored rows back
        report = json.loads(example.path(f"results/verify/{model}_float32.json").read_text())
        reproduces = next(c for c in report["checks"] if c["name"] == "model_reproduces")
        assert reproduces["status"] == "pass" and reproduces["value"] > 0.999, (model, reproduces)


def test_truncation_from_the_file_equals_the_model_truncating(example):
    _, base = read_all(example.path("results/embeddings/embeddings_minilm_float32.parquet"))
    _, truncated = read_all(example.path("results/embeddings/embeddings_minilm_trunc128_float32.parquet"))
    expected = base.vectors[:, :128] / np.linalg.norm(base.vectors[:, :128], axis=1, keepdims=True)
    assert truncated.ids == base.ids
    np.testing.assert_allclose(truncated.vectors, expected, atol=1e-6)


def test_pca_is_applied_alike_to_queries_and_corpus(example, monkeypatch):
    """A query equal to a chunk's text retrieves that chunk first, through the PCA."""
    from embedflow.encoder import load_encoder

    from embedflow.config_file import load_config

    monkeypatch.chdir(example.root)  # the variant's PCA file is a workflow-relative path
    spec = resolve(load_config("config/config.yaml")["models"], "minilm_pca128")
    _, corpus = read_all("results/embeddings/embeddings_minilm_pca128_float32.parquet")
    chunks = {c["id"]: c["content"] for c in json.loads((REPO / "data/example/chunks.json").read_text())}
    ids = corpus.ids[::35]  # 10 chunks across the file
    encoder = load_encoder("minilm_pca128", spec, "cpu", False)
    queries = encoder.encode([chunks[i] for i in ids], spec.get("query_prompt"), 16)
    assert queries.shape == (10, 128)
    top = np.argmax(queries @ corpus.vectors.T, axis=1)
    assert [corpus.ids[i] for i in top] == ids
    # and the evaluation's query vectors, the base's reduced by rule project_queries, are what
    # the variant's encoder gives for the query set
    _, projected = read_all("results/eval/minilm_pca128.queries.parquet")
    query_ids, texts, _ = read_queries(example.config["queries"])
    assert projected.ids == query_ids
    cosines = np.sum(projected.vectors * encoder.encode(texts, spec.get("query_prompt"), 16), axis=1)
    assert cosines.min() > 0.99999, cosines.min()
    provenance = json.loads(example.path("results/eval/minilm_pca128.queries.parquet.provenance.json").read_text())
    pca_input = json.loads(example.path("results/reduce/minilm_pca128.pca.npz.provenance.json").read_text())
    assert provenance["rule"] == "project_queries"
    assert provenance["model"]["variant"]["sha256"] == pca_input["output"]["sha256"]


def test_pca_variant_is_searchable_through_pgvector(example):
    chunk = json.loads((REPO / "data/example/chunks.json").read_text())[100]
    done = subprocess.run(
        [sys.executable, "-m", "embedflow.cli", "search", chunk["content"], "--model", "minilm_pca128", "-k", "3"],
        cwd=example.root, capture_output=True, text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(example.root)},
    )
    assert done.returncode == 0, done.stderr
    first = done.stdout.splitlines()[1].split()
    assert first[0] == "1" and first[2] == chunk["id"]


def test_the_head_was_trained_and_saved_with_its_loss(example):
    folder = example.path("results/models/minilm_head128")
    record = json.loads(example.path("results/models/minilm_head128.provenance.json").read_text())
    training = record["training"]
    assert training["pairs"] == 98 and training["loss"] == "MultipleNegativesRankingLoss"
    assert training["loss_after"] < training["loss_before"]
    assert training["head"] == "Dense(384 -> 128, bias=False) + Normalize"
    modules = json.loads((folder / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[-1] for m in modules][-2:] == ["Dense", "Normalize"]
    from embedflow.provenance import file_record

    assert record["output"] == file_record(example.path("results/models/minilm_head128")) | {
        "path": "results/models/minilm_head128"}
    assert record["output"]["files"] == sum(1 for p in folder.rglob("*") if p.is_file()) - 1  # Snakemake's timestamp
    log = example.path("results/logs/train_head/minilm_head128.log").read_text()
    assert "epoch 20/20: mean training loss" in log


def test_summary_shows_quality_against_dimension_for_each_way(example):
    summary = example.path("results/eval/summary.md").read_text()
    section = summary.split("## Quality against dimension (float32)")[1]
    rows = [line.split("|")[2:5] for line in section.splitlines() if line.startswith("| minilm |")]
    assert [[cell.strip() for cell in row] for row in rows] == [
        ["minilm", "native", "384"],
        ["minilm_trunc128", "Matryoshka truncation", "128"],
        ["minilm_pca128", "PCA", "128"],
        ["minilm_head128", "projection head", "128"],
    ]
    csv_rows = example.path("results/eval/summary.csv").read_text().splitlines()
    assert sum(line.startswith("minilm_pca128,") for line in csv_rows) == len(example.config["precisions"])
    assert example.path("results/eval/quality_vs_dim.png").read_bytes()[:4] == b"\x89PNG"


def test_config_example_names_the_three_ways():
    models = yaml.safe_load((REPO / "config/config.yaml").read_text())["models"]
    assert {key: next(way for way in ("truncate_dim", "pca", "projection_head") if way in spec)
            for key, spec in models.items() if "base" in spec} == VARIANTS


def test_changing_a_variant_reruns_that_variant_only(example):
    from collections import Counter

    from conftest import planned_jobs

    original = example.config_path.read_text()
    precisions = len(example.config["precisions"])
    loadable = sum(p in ("float32", "float16", "bfloat16", "binary") for p in example.config["precisions"])
    per_variant = {"convert": precisions - 1, "measure": precisions, "verify": precisions,
                   "load": loadable, "index": loadable, "evaluate": precisions,
                   "sweep": loadable, "decision": 1}  # the variant's servable tables are swept again
    # a PCA variant reduces its base's queries and probes; a head encodes its own
    try:
        assert planned_jobs(example) == Counter()
        config = example.config
        config["models"]["minilm_pca128"]["pca"]["sample_rows"] = 200
        example.set_config(config)
        assert planned_jobs(example) == Counter({"fit_pca": 1, "project": 1, "project_queries": 1, "project_probes": 1,
                                                 **per_variant, "eval_summary": 1})
        config = yaml.safe_load(original)
        config["models"]["minilm_head128"]["projection_head"]["epochs"] = 5
        example.set_config(config)
        assert planned_jobs(example) == Counter({"train_head": 1, "embed": 1, "gather": 1, "encode_queries": 1,
                                                 "probe": 1, **per_variant, "eval_summary": 1})
    finally:
        example.config_path.write_text(original)
