"""Smaller vectors: variants of a model by Matryoshka truncation, PCA and a trained projection head."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

from conftest import REPO, write_chunks
from embedflow.embeddings_file import read_all
from embedflow.errors import ConfigError, InputError
from embedflow.fit_pca import fit_pca, sample_rows
from embedflow.projection import Projection
from embedflow.variants import check_models, resolve

BASE = {"source": "bundled:all-MiniLM-L6-v2", "normalize": True, "adapter": None, "truncate_dim": None}
VARIANTS = {"minilm_trunc128": "truncate_dim", "minilm_pca128": "pca", "minilm_head128": "projection_head"}


# --- configuration --------------------------------------------------------------------


def test_a_variant_resolves_to_its_bases_settings_changed_by_its_way():
    models = {
        "base": {**BASE, "query_prompt": "q: "},
        "trunc": {"base": "base", "truncate_dim": 64},
        "pca": {"base": "base", "pca": {"dim": 32, "sample_rows": 100, "center": True, "seed": 0}},
        "head": {"base": "base", "projection_head": {
            "dim": 16, "pairs": "p.jsonl", "epochs": 1, "batch_size": 4, "learning_rate": 0.01,
            "unfreeze_backbone": False, "backbone_learning_rate": 1e-5, "scale": 20.0, "seed": 0}},
    }
    check_models(models)
    assert resolve(models, "base")["variant"] is None
    trunc = resolve(models, "trunc")
    assert trunc["truncate_dim"] == 64 and trunc["query_prompt"] == "q: " and trunc["variant"]["way"] == "truncate_dim"
    pca = resolve(models, "pca")
    assert pca["source"] == BASE["source"] and pca["variant"]["path"] == "results/reduce/pca.pca.npz"
    head = resolve(models, "head")
    assert head["source"] == "results/models/head" and head["adapter"] is None and head["query_prompt"] == "q: "


@pytest.mark.parametrize("models, message", [
    ({"v": {"base": "nope", "truncate_dim": 8}}, "base 'nope' is not a key of models"),
    ({"m": BASE, "v": {"base": "m"}}, "needs exactly one of truncate_dim, pca, projection_head"),
    ({"m": BASE, "v": {"base": "m", "truncate_dim": 8, "pca": {"dim": 4}}}, "got ['truncate_dim', 'pca']"),
    ({"m": BASE, "a": {"base": "m", "truncate_dim": 8}, "b": {"base": "a", "truncate_dim": 4}}, "is itself a variant"),
    ({"m": {**BASE, "normalize": False}, "v": {"base": "m", "truncate_dim": 8}}, "has normalize: false"),
    ({"m": {**BASE, "truncate_dim": 64}, "v": {"base": "m", "truncate_dim": 64}}, "not below base 'm'"),
    ({"m": {**BASE, "truncate_dim": 64}, "v": {"base": "m", "projection_head": {"dim": 8, "pairs": "p"}}},
     "cannot sit on base 'm', which has truncate_dim"),
])
def test_bad_variants_are_refused_with_the_model_key(models, message):
    with pytest.raises(ConfigError) as error:
        check_models(models)
    assert message in str(error.value) and "models." in str(error.value)


def test_a_bad_variant_stops_planning(workflow):
    config = workflow.config
    config["models"]["small"] = {"base": "minilm", "pca": {"dim": 8}, "truncate_dim": 8}
    workflow.set_config(config)
    done = workflow.snakemake("-n", check=False)
    assert done.returncode != 0
    assert "models.small: a variant needs exactly one of" in done.stdout + done.stderr


# --- PCA and truncation (numpy) ----------------------------------------------------------


def _low_rank(rows=400, dim=24, rank=6, seed=0):
    rng = np.random.default_rng(seed)
    data = rng.normal(size=(rows, rank)) @ rng.normal(size=(rank, dim)) + 0.01 * rng.normal(size=(rows, dim))
    return (data / np.linalg.norm(data, axis=1, keepdims=True)).astype(np.float32)


def test_pca_agrees_with_scikit_learn():
    from sklearn.decomposition import PCA

    data = _low_rank()
    ours = fit_pca(data, 5)
    theirs = PCA(n_components=5, svd_solver="full").fit(data)
    # same subspace, same signs (both use the svd_flip convention), same variance shares
    np.testing.assert_allclose(ours.components, theirs.components_, atol=1e-4)
    np.testing.assert_allclose(ours.mean, theirs.mean_, atol=1e-6)
    np.testing.assert_allclose(ours.explained_variance_ratio, theirs.explained_variance_ratio_, rtol=1e-4)
    assert ours.explained_variance_ratio.sum() > 0.9  # rank 6 data: 5 components keep most of it


def test_projection_reduces_renormalizes_and_survives_a_round_trip(tmp_path):
    data = _low_rank()
    projection = fit_pca(data, 4)
    projected = projection.apply(data)
    assert projected.shape == (400, 4) and projected.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(projected, axis=1), 1, atol=1e-5)
    projection.save(tmp_path / "p.npz")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left
    again = Projection.load(tmp_path / "p.npz")
    np.testing.assert_array_equal(again.apply(data), projected)
    truncated = Projection.truncation(3).apply(data)
    expected = data[:, :3] / np.linalg.norm(data[:, :3], axis=1, keepdims=True)
    np.testing.assert_allclose(truncated, expected, atol=1e-6)
    with pytest.raises(ConfigError, match="cannot reduce 24 dims to 30"):
        Projection.truncation(30).check_input(24, "here")


def test_pca_sample_is_seeded_and_streamed(tmp_path):
    from conftest import synthetic_corpus

    _, vectors = synthetic_corpus(tmp_path, rows=2500, dim=8, batch=500)
    path = tmp_path / "embeddings_synthetic_float32.parquet"
    first, second = sample_rows(path, 300, seed=1), sample_rows(path, 300, seed=1)
    np.testing.assert_array_equal(first, second)
    assert first.shape == (300, 8) and not np.array_equal(first, sample_rows(path, 300, seed=2))
    # every sampled row is a row of the file, in file order
    positions = [int(np.flatnonzero((vectors == row).all(axis=1))[0]) for row in first]
    assert positions == sorted(positions) and len(set(positions)) == 300
    np.testing.assert_array_equal(sample_rows(path, 5000, seed=0), vectors)


# --- the projection head (a tiny random model) -----------------------------------------


def _pairs(tmp_path, count=24):
    chunks = [{"id": f"c{i}", "content": f"topic {i}: " + " ".join(f"w{(i * 7 + j) % 50}" for j in range(12))}
              for i in range(count)]
    chunks_path = write_chunks(tmp_path / "chunks.json", chunks)
    pairs_path = tmp_path / "pairs.jsonl"
    pairs_path.write_text("".join(
        json.dumps({"query": f"w{(i * 7 + 3) % 50} w{(i * 7 + 5) % 50} topic", "positive_id": f"c{i}"}) + "\n"
        for i in range(count)
    ))
    return chunks_path, pairs_path


HEAD = {"dim": 8, "epochs": 15, "batch_size": 8, "learning_rate": 0.02, "unfreeze_backbone": False,
        "backbone_learning_rate": 1e-4, "scale": 20.0, "seed": 0}


def _tiny_spec(tiny_model):
    return {"source": str(tiny_model), "normalize": True, "compute_precision": "float32", "batch_size": 16,
            "adapter": None, "truncate_dim": None, "query_prompt": None, "document_prompt": None}


@pytest.mark.parametrize("unfreeze", [False, True], ids=["frozen", "unfrozen"])
def test_training_lowers_the_heads_loss_on_its_pairs(tmp_path, tiny_model, unfreeze):
    from embedflow.encoder import load_encoder
    from embedflow.train_head import read_pairs, train_projection_head

    chunks_path, pairs_path = _pairs(tmp_path)
    pairs = read_pairs(pairs_path, chunks_path, "content")
    spec = _tiny_spec(tiny_model)
    encoder = load_encoder("tiny", spec, "cpu", False)
    frozen_before = {name: p.detach().clone() for name, p in encoder.model.named_parameters()}
    result = train_projection_head(encoder, pairs, {**HEAD, "unfreeze_backbone": unfreeze}, spec)
    assert result.loss_after < 0.9 * result.loss_before, (result.loss_before, result.loss_after)
    assert len(result.epoch_losses) == HEAD["epochs"] and result.steps == HEAD["epochs"] * 3
    backbone_moved = any(not torch_equal(p, frozen_before[name])
                         for name, p in result.model.named_parameters() if name in frozen_before)
    assert backbone_moved == unfreeze

    # saved, it is a sentence-transformers folder that embeds like any model: k dims, unit length
    result.model.save(str(tmp_path / "head"))
    trained = load_encoder("head", {**spec, "source": str(tmp_path / "head")}, "cpu", False)
    vectors = trained.encode(pairs.passages[:4], None, 4)
    assert trained.dim == 8 and vectors.shape == (4, 8)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)


def test_a_head_on_a_base_with_an_adapter_saves_a_folder_that_embeds_the_same(tmp_path, tiny_model, tiny_lora_adapter):
    """The saved folder keeps the adapter (sentence-transformers saves it next to the
    modules, pointing at the base), so embedding from the folder gives the trained model's vectors."""
    from embedflow.encoder import load_encoder
    from embedflow.train_head import read_pairs, train_projection_head

    chunks_path, pairs_path = _pairs(tmp_path)
    pairs = read_pairs(pairs_path, chunks_path, "content")
    spec = {**_tiny_spec(tiny_model), "adapter": str(tiny_lora_adapter)}
    encoder = load_encoder("tiny", spec, "cpu", False)
    assert encoder.identity["adapter_applied"]
    result = train_projection_head(encoder, pairs, {**HEAD, "epochs": 2}, spec)
    in_memory = result.model.encode(pairs.passages, convert_to_numpy=True, normalize_embeddings=True)
    result.model.save(str(tmp_path / "head"))
    assert (tmp_path / "head" / "adapter_config.json").exists()
    saved = load_encoder("head", {**spec, "source": str(tmp_path / "head"), "adapter": None}, "cpu", False)
    np.testing.assert_allclose(saved.encode(pairs.passages, None, 8), in_memory, atol=1e-5)


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))


@pytest.mark.parametrize("line, message", [
    ('{"query": "q"}', "line 2: give exactly one of 'positive_id' (a chunk id) and 'positive' (a text)"),
    ('{"query": "", "positive": "p"}', "line 2: 'query' must be a non-empty string"),
    ('{"query": "q", "positive_id": "nope"}', "line 2: positive_id 'nope' is not a chunk of"),
    ('{"query": "q", ', "line 2: not valid JSON"),
])
def test_bad_pairs_name_the_file_and_line(tmp_path, line, message):
    from embedflow.train_head import read_pairs

    chunks_path, _ = _pairs(tmp_path, count=3)
    pairs_path = tmp_path / "bad.jsonl"
    pairs_path.write_text('{"query": "fine", "positive_id": "c1"}\n' + line + "\n")
    with pytest.raises(InputError) as error:
        read_pairs(pairs_path, chunks_path, "content")
    assert str(pairs_path) in str(error.value) and message in str(error.value)


def test_batches_never_hold_one_passage_twice():
    from embedflow.train_head import batches_without_duplicates

    keys = ["a", "b", "a", "c", "a", "d", "b", "e"]
    batches = batches_without_duplicates(keys, 4, None)
    assert all(len({keys[i] for i in batch}) == len(batch) for batch in batches)
    used = sorted(i for batch in batches for i in batch)
    # the third "a" is left alone in a last batch: one pair has no negative, so it is dropped
    assert used == [0, 1, 2, 3, 5, 6, 7]


# --- the example, run by Snakemake ---------------------------------------------------------


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
        # the model work of verify (rule probe) ran through the variant too: re-encoded chunks
        # give the stored rows back
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
    # and the same query vectors are what encode_queries wrote for the evaluation
    provenance = json.loads(example.path("results/eval/minilm_pca128.queries.parquet.provenance.json").read_text())
    pca_input = json.loads(example.path("results/reduce/minilm_pca128.pca.npz.provenance.json").read_text())
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
    per_variant = {"convert": precisions - 1, "probe": 1, "measure": precisions, "verify": precisions,
                   "load": loadable, "index": loadable, "encode_queries": 1, "evaluate": precisions,
                   "sweep": loadable, "decision": 1}  # the variant's servable tables are swept again
    try:
        assert planned_jobs(example) == Counter()
        config = example.config
        config["models"]["minilm_pca128"]["pca"]["sample_rows"] = 200
        example.set_config(config)
        assert planned_jobs(example) == Counter({"fit_pca": 1, "project": 1, **per_variant, "eval_summary": 1})
        config = yaml.safe_load(original)
        config["models"]["minilm_head128"]["projection_head"]["epochs"] = 5
        example.set_config(config)
        assert planned_jobs(example) == Counter({"train_head": 1, "embed": 1, "gather": 1, **per_variant,
                                                          "eval_summary": 1})
    finally:
        example.config_path.write_text(original)
