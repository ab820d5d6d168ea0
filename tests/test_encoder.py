"""Model loading: devices, compute precision, adapters, truncation, prompts."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, embed_log
from embedflow.encoder import (
    choose_device,
    load_encoder,
    precision_warnings,
    resolve_source,
    tf32_wanted,
)
from embedflow.errors import ConfigError, UserError
from embedflow.provenance import read_provenance

TEXTS = ["Return the path as a string.", "Open the file and read its text.", "Sort a list in place."]


def spec(source, **overrides) -> dict:
    base = {
        "source": str(source), "revision": None, "adapter": None, "truncate_dim": None,
        "document_prompt": None, "query_prompt": None, "max_seq_length": None, "batch_size": 8,
        "compute_precision": "float32", "normalize": True, "trust_remote_code": False,
    }
    return {**base, **overrides}


@pytest.mark.parametrize(
    "policy, require, available, count, expected",
    [
        ("auto", False, False, 0, "cpu"),
        ("auto", False, True, 2, "cuda"),
        ("cpu", False, True, 1, "cpu"),
        ("cuda", False, True, 1, "cuda"),
        ("cuda:1", True, True, 2, "cuda:1"),
    ],
)
def test_device_policy(policy, require, available, count, expected):
    assert choose_device(policy, require, available, count) == expected


@pytest.mark.parametrize(
    "policy, require, available, count, message",
    [
        ("auto", True, False, 0, "require_cuda is true but no CUDA device"),
        ("cpu", True, True, 1, "require_cuda is true"),
        ("cuda", False, False, 0, "torch sees no CUDA device"),
        ("cuda:2", False, True, 2, "torch sees 2 CUDA device(s)"),
        ("gpu", False, True, 1, "device must be auto, cpu, cuda or cuda:N"),
    ],
)
def test_device_policy_errors(policy, require, available, count, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        choose_device(policy, require, available, count)


def test_auto_runs_the_model_on_the_device_torch_sees(tiny_model, torch_device):
    encoder = load_encoder("t", spec(tiny_model), "auto", False)
    assert encoder.device == torch_device
    assert next(encoder.model.parameters()).device.type == torch_device
    vectors = encoder.encode(TEXTS, None, 8)
    assert vectors.dtype == np.float32 and vectors.shape == (3, 32)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-6)


def test_tf32_only_on_cuda_and_float16_on_cpu_warns():
    assert tf32_wanted("tf32", "cuda:0") and tf32_wanted("tf32", "cuda")
    assert not tf32_wanted("tf32", "cpu") and not tf32_wanted("float32", "cuda")
    assert "slow" in precision_warnings("float16", "cpu")[0]
    assert precision_warnings("float16", "cuda") == []
    assert "plain float32" in precision_warnings("tf32", "cpu")[0]


def test_sources(tmp_path):
    assert resolve_source("bundled:all-MiniLM-L6-v2").kind == "bundled"
    assert resolve_source(str(tmp_path)).kind == "local"
    assert resolve_source("Qwen/Qwen3-Embedding-4B").kind == "hub"
    with pytest.raises(ConfigError, match="unknown bundled model 'nope'"):
        resolve_source("bundled:nope")


def test_bundled_model_runs_offline():
    code = (
        "from embedflow.encoder import load_encoder;"
        f"e = load_encoder('m', {spec('bundled:all-MiniLM-L6-v2')!r}, 'cpu', False);"
        "v = e.encode(['offline'], None, 4); print(v.shape)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": "/nonexistent"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "(1, 384)"


def test_bfloat16_compute_is_close_to_float32(tiny_model):
    full = load_encoder("t", spec(tiny_model), "cpu", False)
    half = load_encoder("t", spec(tiny_model, compute_precision="bfloat16"), "cpu", False)
    assert str(next(half.model.parameters()).dtype) == "torch.bfloat16"
    a, b = full.encode(TEXTS, None, 8), half.encode(TEXTS, None, 8)
    assert a.dtype == b.dtype == np.float32
    assert (a * b).sum(1).min() > 0.99
    assert not np.array_equal(a, b)


def test_truncate_dim_renormalizes(tiny_model):
    encoder = load_encoder("t", spec(tiny_model, truncate_dim=8), "cpu", False)
    vectors = encoder.encode(TEXTS, None, 8)
    assert encoder.dim == 8 and vectors.shape == (3, 8)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-6)
    with pytest.raises(ConfigError, match="truncate_dim 64 exceeds"):
        load_encoder("t", spec(tiny_model, truncate_dim=64), "cpu", False)


def test_prompt_and_normalize_change_vectors(tiny_model):
    encoder = load_encoder("t", spec(tiny_model), "cpu", False)
    plain, prompted = encoder.encode(TEXTS, None, 8), encoder.encode(TEXTS, "passage: ", 8)
    assert not np.allclose(plain, prompted)
    raw = load_encoder("t", spec(tiny_model, normalize=False), "cpu", False).encode(TEXTS, None, 8)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1)


def test_long_texts_are_counted_as_truncated(tiny_model):
    encoder = load_encoder("t", spec(tiny_model, max_seq_length=16), "cpu", False)
    encoder.encode(["word " * 100, "short"], None, 8)
    assert encoder.truncated_texts == 1


def test_missing_adapter_is_a_config_error(tiny_model, tmp_path):
    with pytest.raises(ConfigError, match="adapter folder .* does not exist"):
        load_encoder("t", spec(tiny_model, adapter=str(tmp_path / "nope")), "cpu", False)


def test_lora_adapter_changes_embeddings_and_is_recorded(workflow, tiny_model, tiny_lora_adapter):
    """Two model keys on the same tiny model, one with a LoRA adapter, through Snakemake."""
    workflow.update_config(
        models={
            "plain": {"source": str(tiny_model)},
            "tuned": {"source": str(tiny_model), "adapter": str(tiny_lora_adapter)},
        },
        precisions=["float32"],
    )
    from embedflow.embeddings_file import read_all

    outputs = {key: workflow.path(f"results/embeddings/embeddings_{key}_float32.parquet") for key in ("plain", "tuned")}
    # Only the two embed jobs: what is asserted is the model's output, not the chain's.
    workflow.snakemake("--", *(str(path.relative_to(workflow.root)) for path in outputs.values()))
    plain, tuned = (read_all(outputs[key])[1].vectors for key in ("plain", "tuned"))
    assert plain.shape == tuned.shape
    assert (plain * tuned).sum(1).max() < 0.9999  # every row moved
    assert read_provenance(outputs["plain"])["model"]["adapter_applied"] is False
    record = read_provenance(outputs["tuned"])["model"]
    assert record["adapter_applied"] is True
    assert record["adapter"]["files_sha256"]["adapter_config.json"]
    assert "adapter_model.safetensors" in record["adapter"]["files_sha256"]
    assert "applied" in embed_log(workflow, "tuned")
