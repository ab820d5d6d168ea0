"""The embed and convert stages, run by Snakemake itself on a tiny corpus."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import SMALL_RUN_PRECISIONS, example_chunks, planned_jobs
from embedflow.embeddings_file import read_all
from embedflow.hashing import sha256_text
from embedflow.precision import dequantize_int8, unpack_binary
from embedflow.provenance import read_provenance

PRECISIONS = SMALL_RUN_PRECISIONS
CHUNKS = 12


@pytest.fixture(scope="module")
def finished(small_run):
    """The session's full run of the default pipeline on 12 example chunks (tests/conftest.py)."""
    assert small_run.config["precisions"] == PRECISIONS
    return small_run


def embeddings(workflow, precision):
    return read_all(workflow.path(f"results/embeddings/embeddings_minilm_{precision}.parquet"))


def test_every_precision_has_its_file_and_provenance(finished):
    for precision in PRECISIONS:
        path = finished.path(f"results/embeddings/embeddings_minilm_{precision}.parquet")
        assert path.is_file(), precision
        assert read_provenance(path)["output"]["bytes"] == path.stat().st_size


def test_rows_ids_and_hashes_follow_the_input(finished):
    chunks = example_chunks(CHUNKS)
    for precision in PRECISIONS:
        meta, batch = embeddings(finished, precision)
        assert batch.ids == [str(chunk["id"]) for chunk in chunks]
        assert batch.hashes == [sha256_text(chunk["content"]) for chunk in chunks]
        assert (meta.model, meta.dim, meta.precision, meta.normalized) == ("minilm", 384, precision, True)


def test_dtypes_and_widths(finished):
    expected = {
        "float32": (np.float32, 384),
        "float16": (np.float16, 384),
        "bfloat16": (np.float32, 384),
        "int8": (np.int8, 384),
        "binary": (np.uint8, 48),
    }
    for precision, (dtype, width) in expected.items():
        _, batch = embeddings(finished, precision)
        assert batch.vectors.dtype == dtype, precision
        assert batch.vectors.shape == (CHUNKS, width), precision


def test_float_vectors_are_unit_norm_and_agree(finished):
    _, reference = embeddings(finished, "float32")
    np.testing.assert_allclose(np.linalg.norm(reference.vectors, axis=1), 1, atol=1e-5)
    for precision in ("float16", "bfloat16"):
        _, batch = embeddings(finished, precision)
        vectors = batch.vectors.astype(np.float32)
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-2)
        cosine = (vectors * reference.vectors).sum(1) / np.linalg.norm(vectors, axis=1)
        assert cosine.min() >= 0.999, (precision, cosine.min())


def test_bfloat16_values_are_exact_bfloat16(finished):
    _, batch = embeddings(finished, "bfloat16")
    low_bits = batch.vectors.view(np.uint32) & 0xFFFF
    assert not low_bits.any()


def test_int8_dequantizes_close_to_float32(finished):
    meta, batch = embeddings(finished, "int8")
    _, reference = embeddings(finished, "float32")
    ranges = meta.ranges_array()
    assert ranges.shape == (2, 384)
    np.testing.assert_array_equal(ranges[0], reference.vectors.min(0))
    np.testing.assert_array_equal(ranges[1], reference.vectors.max(0))
    restored = dequantize_int8(batch.vectors, ranges)
    assert restored.shape == reference.vectors.shape
    cosine = (restored * reference.vectors).sum(1) / np.linalg.norm(restored, axis=1)
    assert cosine.min() > 0.99


def test_binary_unpacks_to_the_signs(finished):
    meta, batch = embeddings(finished, "binary")
    _, reference = embeddings(finished, "float32")
    bits = unpack_binary(batch.vectors, meta.dim)
    assert bits.shape == (CHUNKS, 384)
    np.testing.assert_array_equal(bits.astype(bool), reference.vectors > 0)


def test_embed_provenance_names_model_device_and_config(finished, torch_device):
    record = read_provenance(finished.path("results/embeddings/embeddings_minilm_float32.parquet"))
    assert record["rule"] == "gather"  # of the one shard the 12 chunks make
    assert record["config"]["model"]["source"] == "bundled:all-MiniLM-L6-v2"
    assert record["model"]["adapter_applied"] is False
    assert record["model"]["weights_sha256"]
    [shard] = record["shards"]
    assert (shard["device"], shard["rows"], shard["encoded"], shard["reused"]) == (torch_device, CHUNKS, CHUNKS, 0)
    assert shard["texts_per_second"] > 0
    assert record["timing"]["chunks"] == CHUNKS
    assert record["inputs"][0]["path"] == "results/shards/chunks.plan.json"
    part = read_provenance(finished.path(shard["part"]))
    assert part["rule"] == "embed" and part["inputs"][0]["path"] == "data/chunks.json"
    assert record["software"]["sentence-transformers"]


def test_embed_log_names_device_precision_and_dimension(finished, torch_device):
    import torch

    [log] = [path.read_text() for path in finished.path("results/logs/embed/minilm").glob("*.log")]
    assert f"on {'CPU' if torch_device == 'cpu' else torch.cuda.get_device_name(0)}" in log
    assert "compute precision float32" in log and "TF32 off" in log and "dimension 384" in log


def test_a_second_run_does_nothing(finished):
    assert planned_jobs(finished) == {}


def test_dry_run_lists_jobs_and_runs_nothing(workflow):
    # minilm x float32 float16 int8 binary; pgvector holds all but int8
    # (preflight validates the chunks once, before the model jobs; the embed jobs of the
    # shards are planned once checkpoint shard_plan has cut the corpus)
    assert planned_jobs(workflow) == {"preflight": 1, "shard_plan": 1, "gather": 1, "probe": 1, "convert": 3,
                                      "measure": 4, "verify": 4, "load": 3, "index": 3}
    assert not workflow.path("results").exists()


def test_float32_is_temporary_when_not_configured(workflow):
    workflow.update_config(precisions=["float16"])
    workflow.snakemake()
    assert workflow.path("results/embeddings/embeddings_minilm_float16.parquet").is_file()
    assert not workflow.path("results/embeddings/embeddings_minilm_float32.parquet").exists()
    assert not workflow.path("results/embeddings/embeddings_minilm_float32.parquet.provenance.json").exists()


def test_random_sample_is_seeded_and_keeps_input_order(workflow):
    workflow.update_config(test_mode={"max_chunks": 5, "sample": "random", "seed": 7})
    workflow.snakemake("--", "results/embeddings/embeddings_minilm_float32.parquet")  # its shard alone
    _, batch = embeddings(workflow, "float32")
    order = [str(chunk["id"]) for chunk in example_chunks(12)]
    assert len(batch.ids) == 5
    assert batch.ids == sorted(batch.ids, key=order.index)
    provenance = read_provenance(workflow.path("results/embeddings/embeddings_minilm_float32.parquet"))
    assert provenance["config"]["selection"] == {
        "max_chunks": 5, "sample": "random", "seed": 7, "text_field": "content"
    }
    assert json.loads(json.dumps(provenance["corpus"]))["embedded"] == 5
