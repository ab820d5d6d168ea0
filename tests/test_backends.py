"""Backends onnx and openvino: export from a local folder without network, vectors against
torch, the identity that tells them apart, and the config they refuse (docs/backends.md)."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from embedflow.backends import MANIFEST, RUNTIME_DISTRIBUTIONS, check_backend, export_slice, graph_file
from embedflow.backends.export import check_exported, export_model
from embedflow.config import model_output_slice
from embedflow.encoder import load_encoder, model_identity, resolve_source
from embedflow.errors import ConfigError, UserError
from embedflow.hashing import sha256_file
from embedflow.identity import encoder_identity, identity_key
from embedflow.provenance import distribution_versions

# Lengths that differ, so that a batch of two pads its shorter row.
TEXTS = [
    "Return the path as a string.",
    "Open the file, read its whole text in the given encoding and close it again before returning.",
    "Sort.",
    "base64.b64encode(s) encodes the bytes-like object s using Base64 and returns the encoded bytes.",
]
# The least cosine against torch float32 that each graph must keep, per chunk: a float graph is
# the same arithmetic in another order; int8 rounds weights and activations to 256 levels.
FLOAT_MIN_COSINE = 0.9999
INT8_MIN_COSINE = 0.99


def spec(source, **overrides) -> dict:
    base = {
        "source": str(source), "revision": None, "adapter": None, "truncate_dim": None,
        "document_prompt": None, "query_prompt": None, "max_seq_length": None, "batch_size": 2,
        "compute_precision": "float32", "normalize": True, "trust_remote_code": False,
        "backend": "torch", "quantization": None, "variant": None,
    }
    return {**base, **overrides}


@pytest.fixture(scope="module")
def exports(tiny_model, tmp_path_factory):
    """ONNX and OpenVINO, each with its int8 graph beside the float one, exported with the hub
    switched off: a local folder needs no network."""
    folder = tmp_path_factory.mktemp("exports")
    saved = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        made = {}
        for backend in ("onnx", "openvino"):
            model = spec(tiny_model, backend=backend, quantization="int8")
            identity = model_identity(model, resolve_source(model["source"]), False)
            made[backend] = (folder / backend, export_model("tiny", model, folder / backend, identity))
        return made
    finally:
        if saved is None:
            os.environ.pop("HF_HUB_OFFLINE")
        else:
            os.environ["HF_HUB_OFFLINE"] = saved


def exported_encoder(tiny_model, exports, backend, quantization):
    folder, _ = exports[backend]
    return load_encoder("tiny", spec(tiny_model, backend=backend, quantization=quantization,
                                     export_folder=str(folder)), "cpu", False)


@pytest.mark.parametrize("backend, quantization, least", [
    ("onnx", None, FLOAT_MIN_COSINE), ("onnx", "int8", INT8_MIN_COSINE),
    ("openvino", None, FLOAT_MIN_COSINE), ("openvino", "int8", INT8_MIN_COSINE),
])
def test_exported_vectors_match_torch(tiny_model, exports, backend, quantization, least):
    reference = load_encoder("tiny", spec(tiny_model), "cpu", False).encode(TEXTS, None, 2)
    encoder = exported_encoder(tiny_model, exports, backend, quantization)
    vectors = encoder.encode(TEXTS, None, 2)
    assert vectors.dtype == np.float32 and vectors.shape == reference.shape
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    cosines = (vectors * reference).sum(axis=1)
    assert cosines.min() >= least, (backend, quantization, cosines)
    assert encoder.compute_precision == "float32" and encoder.device == "cpu"


def test_the_identity_names_backend_quantization_and_graph(tiny_model, exports):
    identities = {
        (backend, quantization): exported_encoder(tiny_model, exports, backend, quantization).identity
        for backend, quantization in (("onnx", None), ("onnx", "int8"), ("openvino", "int8"))
    }
    identities[("torch", None)] = load_encoder("tiny", spec(tiny_model), "cpu", False).identity
    for (backend, quantization), identity in identities.items():
        assert (identity["backend"], identity["quantization"]) == (backend, quantization)
    graphs = [identity["export"]["graph_sha256"] for key, identity in identities.items() if key[0] != "torch"]
    assert len({str(sorted(graph.items())) for graph in graphs}) == len(graphs)  # each its own graph
    int8 = identities[("onnx", "int8")]["export"]
    folder, _ = exports["onnx"]
    assert int8["graph_sha256"] == {int8["graph_file"]: sha256_file(folder / int8["graph_file"])}


def test_the_manifest_records_source_settings_versions_and_files(tiny_model, exports):
    folder, manifest = exports["openvino"]
    torch_identity = load_encoder("tiny", spec(tiny_model), "cpu", False).identity
    assert manifest["source_identity"]["weights_sha256"] == torch_identity["weights_sha256"]
    assert manifest["settings"] == {"source": str(tiny_model), "revision": None, "trust_remote_code": False,
                                    "backend": "openvino", "quantization": "int8"}
    assert manifest["graph_file"] == graph_file(spec(tiny_model, backend="openvino", quantization="int8"))
    assert manifest["software"]["openvino"] and manifest["software"]["nncf"] and manifest["calibration"]["texts"]
    assert manifest["files_sha256"] == {name: sha256_file(folder / name) for name in manifest["files_sha256"]}
    assert not any(name.endswith(".onnx") for name in manifest["files_sha256"])  # OpenVINO runs its own graph


def test_a_folder_exported_from_another_source_is_refused(tiny_model, exports, tmp_path):
    folder, _ = exports["onnx"]
    with pytest.raises(UserError, match="run snakemake to export it again"):
        check_exported(folder, spec(tmp_path, backend="onnx"), "tiny")
    with pytest.raises(UserError, match="openvino/openvino_model.xml"):
        check_exported(folder, spec(tiny_model, backend="openvino"), "tiny")


def test_the_cache_identity_of_an_exported_graph_names_the_versions_that_make_and_run_it(tiny_model):
    for backend in ("onnx", "openvino"):
        identity = encoder_identity(spec(tiny_model, backend=backend, quantization="int8"))
        assert identity["runtime"] == distribution_versions(RUNTIME_DISTRIBUTIONS[backend])
        assert all(identity["runtime"].values()), identity["runtime"]  # each one installed
    torch_identity = encoder_identity(spec(tiny_model))
    assert "runtime" not in torch_identity  # torch's cache keys are the ones they were
    upgraded = {**encoder_identity(spec(tiny_model, backend="onnx")), "runtime": {"onnxruntime": "0.0"}}
    assert identity_key(upgraded) != identity_key(encoder_identity(spec(tiny_model, backend="onnx")))


def test_a_graph_exported_with_other_versions_is_refused(tiny_model, exports, tmp_path):
    folder, manifest = exports["onnx"]
    stale = shutil.copytree(folder, tmp_path / "onnx")
    (stale / MANIFEST).write_text(json.dumps({**manifest, "software": {**manifest["software"], "onnxruntime": "1.0.0"}}))
    installed = distribution_versions(["onnxruntime"])["onnxruntime"]
    with pytest.raises(UserError, match=rf"onnxruntime 1\.0\.0 -> {installed}.*export it again"):
        check_exported(stale, spec(tiny_model, backend="onnx", quantization="int8"), "tiny")
    check_exported(folder, spec(tiny_model, backend="onnx", quantization="int8"), "tiny")  # the fresh one passes


def test_an_onnx_int8_graph_for_vnni_is_its_own_graph_and_its_own_cache_key(tiny_model, exports, tmp_path):
    vnni = spec(tiny_model, backend="onnx", quantization="int8", quantization_config="avx512_vnni")
    avx2 = spec(tiny_model, backend="onnx", quantization="int8", quantization_config="avx2")
    assert graph_file(vnni) == "onnx/model_qint8_avx512_vnni.onnx"
    assert graph_file(avx2) == graph_file(spec(tiny_model, backend="onnx", quantization="int8"))  # the default
    manifest = export_model("tiny", vnni, tmp_path / "vnni", model_identity(vnni, resolve_source(str(tiny_model)), False))
    assert manifest["settings"]["quantization_config"] == "avx512_vnni" and graph_file(vnni) in manifest["files_sha256"]
    folder, _ = exports["onnx"]
    with pytest.raises(UserError, match="model_qint8_avx512_vnni.onnx"):  # the avx2 export lacks that graph
        check_exported(folder, vnni, "tiny")
    reference = load_encoder("tiny", spec(tiny_model), "cpu", False).encode(TEXTS, None, 2)
    encoder = load_encoder("tiny", {**vnni, "export_folder": str(tmp_path / "vnni")}, "cpu", False)
    assert (encoder.encode(TEXTS, None, 2) * reference).sum(axis=1).min() >= INT8_MIN_COSINE
    assert encoder.identity["quantization_config"] == "avx512_vnni"
    assert identity_key(encoder_identity(vnni)) != identity_key(encoder_identity(avx2))
    # the params of export_backend and of the model's jobs: changing it reruns its export and chain
    assert export_slice(vnni) != export_slice(avx2) and model_output_slice(vnni) != model_output_slice(avx2)
    # Where the key does not apply it is in no identity and no params: nothing reruns.
    for other in (spec(tiny_model), spec(tiny_model, backend="onnx"), spec(tiny_model, backend="openvino",
                                                                           quantization="int8")):
        for record in (encoder_identity(other), export_slice(other), model_output_slice(other)):
            assert "quantization_config" not in record


@pytest.mark.parametrize("overrides, message", [
    ({"quantization": "int8"}, "quantization: int8 needs backend onnx or openvino"),
    ({"backend": "onnx", "quantization": "int8", "quantization_config": "avx9"}, "must be one of avx2, avx512"),
    ({"backend": "onnx", "compute_precision": "bfloat16"}, "compute_precision 'bfloat16' is for backend torch"),
    ({"backend": "openvino", "adapter": "/adapters/a"}, "without the adapter /adapters/a"),
])
def test_config_a_backend_cannot_run_is_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        check_backend("m", spec("/models/m", **overrides))


def test_an_exported_backend_refuses_a_gpu_it_does_not_use(tiny_model, exports):
    folder, _ = exports["onnx"]
    with pytest.raises(UserError, match="runs on the CPU"):
        load_encoder("tiny", spec(tiny_model, backend="onnx", export_folder=str(folder)), "cuda", False)
