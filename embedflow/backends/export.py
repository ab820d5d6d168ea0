"""Export a model's Transformer module to ONNX or OpenVINO, optionally int8 (rule export_backend).

Why not sentence-transformers' ``backend=`` export (optimum): with the pinned transformers
5.23 neither optimum-onnx (0.1.0 caps transformers < 4.58) nor optimum-intel (2.2.0 caps it
< 5.6) installs, and the one transformers-5 build, the third-party fork optimum-onnx-naf
0.1.1, fails to export against 5.23 (its mask patch misses ``cache_position``). So this
module does what those helpers do, with the libraries underneath them (docs/backends.md):

* float ONNX: ``torch.onnx.export`` with the dynamo exporter (the TorchScript tracer bakes
  transformers 5's padding-mask branch into the graph: padded rows come out wrong), inputs
  and ``last_hidden_state`` with dynamic batch and sequence axes;
* ONNX int8: ONNX Runtime's dynamic quantization with the settings of
  ``export_dynamic_quantized_onnx_model(model, quantization_config, ...)`` (optimum's
  ``AutoQuantizationConfig.<config>(is_static=False)``: uint8 activations, symmetric
  per-channel weights, uint8 for avx2 and int8 for the others, full range);
* OpenVINO: ``openvino.convert_model`` of the float ONNX graph (one graph, two runtimes);
* OpenVINO int8: NNCF post-training static quantization (what
  ``export_static_quantized_openvino_model`` runs) calibrated offline on the texts in
  ``calibration.jsonl`` beside this module, never on the corpus: the export, and so the
  model's identity, must not change when the corpus does.

The file names and folders are sentence-transformers' (embedflow.backends.GRAPH_FILES).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from embedflow.atomic import write_json
from embedflow.backends import (
    GRAPH_FILES, MANIFEST, ONNX_INT8_WEIGHTS, backend_of, export_slice, graph_file, onnx_int8_config, runtime_versions,
)
from embedflow.errors import UserError
from embedflow.hashing import sha256_file, sha256_tree

log = logging.getLogger(__name__)

CALIBRATION = Path(__file__).with_name("calibration.jsonl")
# Texts per calibration batch, and the token limit calibration pads and cuts to.
CALIBRATION_BATCH = 8
CALIBRATION_MAX_TOKENS = 256
GRAPH_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
OPSET = 18
RUNTIME_PACKAGES = ("torch", "transformers", "sentence-transformers", "onnx", "onnxscript", "onnxruntime",
                    "openvino", "nncf")


def calibration_texts() -> list[str]:
    return [json.loads(line)["text"] for line in CALIBRATION.read_text(encoding="utf-8").splitlines() if line]


def graph_inputs(model) -> list[str]:
    """The tokenizer features the Transformer module feeds its network (BERT: all three)."""
    features = model.preprocess(["a"])
    return [name for name in GRAPH_INPUTS if name in features]


class _LastHiddenState:
    """The Transformer module's network as a function of positional tensors, for the exporter."""

    def __new__(cls, network, names):
        import torch

        class Module(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.network = network

            def forward(self, *tensors):
                return self.network(**dict(zip(names, tensors)), return_dict=True).last_hidden_state

        return Module().eval()


def export_onnx(model, path: Path) -> list[str]:
    """The float32 graph of ``model[0]`` (a sentence-transformers Transformer) at ``path``."""
    import torch

    names = graph_inputs(model)
    # Two rows of different lengths: the example has padding, and batch and sequence stay dynamic.
    features = model.preprocess(["a short text", "a longer text, so that the first row is padded to it"])
    example = tuple(features[name] for name in names)
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.inference_mode(False), torch.no_grad():
        torch.onnx.export(
            _LastHiddenState(model[0].model, names), example, str(path), input_names=names,
            output_names=["last_hidden_state"],
            # forward(*tensors): one positional group, a shape spec per tensor in it
            dynamic_shapes=(tuple({0: batch, 1: sequence} for _ in names),),
            dynamo=True, external_data=False, opset_version=OPSET, verbose=False,
        )
    return names


def quantize_onnx_int8(float_path: Path, path: Path, config: str) -> None:
    """Dynamic int8 as sentence-transformers' export_dynamic_quantized_onnx_model(..., config)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.registry import IntegerOpsRegistry

    weights = QuantType.QUInt8 if ONNX_INT8_WEIGHTS[config] == "quint8" else QuantType.QInt8
    quantize_dynamic(
        float_path, path, op_types_to_quantize=list(IntegerOpsRegistry), per_channel=True, reduce_range=False,
        weight_type=weights, extra_options={"WeightSymmetric": True, "ActivationSymmetric": False},
    )


def convert_openvino(onnx_path: Path, path: Path):
    import openvino as ov

    network = ov.convert_model(str(onnx_path))
    path.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(network, str(path), compress_to_fp16=False)  # float32 weights: compute_precision float32
    return network


def calibration_batches(model, names: list[str]) -> list[dict]:
    texts = calibration_texts()
    batches = []
    for start in range(0, len(texts), CALIBRATION_BATCH):
        features = model.preprocess(texts[start : start + CALIBRATION_BATCH])
        batches.append({name: features[name][:, :CALIBRATION_MAX_TOKENS].numpy() for name in names})
    return batches


def quantize_openvino_int8(network, model, names: list[str], path: Path) -> None:
    """NNCF static int8 (transformer preset), calibrated on calibration.jsonl."""
    import nncf
    import openvino as ov

    batches = calibration_batches(model, names)
    quantized = nncf.quantize(
        network, nncf.Dataset(batches), model_type=nncf.ModelType.TRANSFORMER,
        subset_size=len(batches), preset=nncf.QuantizationPreset.MIXED,
    )
    ov.save_model(quantized, str(path), compress_to_fp16=False)


def package_versions() -> dict[str, str | None]:
    from embedflow.provenance import distribution_versions

    return distribution_versions(RUNTIME_PACKAGES)


def export_model(key: str, spec: dict, folder: str | Path, source_identity: dict) -> dict:
    """Write the graph ``spec`` asks for (and the float graph it derives from) into ``folder``,
    with its manifest; returns the manifest. The folder appears whole or not at all."""
    from embedflow.encoder import load_torch_model, resolve_source

    folder = Path(folder)
    building = folder.with_name(f".{folder.name}.building")
    shutil.rmtree(building, ignore_errors=True)
    backend, quantization = backend_of(spec), spec.get("quantization")
    try:
        model = load_torch_model(spec, resolve_source(spec["source"]), "cpu")
        onnx_path = building / GRAPH_FILES[("onnx", None)]
        log.info("model %s: exporting its Transformer module to ONNX (dynamo exporter, opset %d)", key, OPSET)
        names = export_onnx(model, onnx_path)
        if int8_config := onnx_int8_config(spec):
            log.info("model %s: ONNX dynamic int8 (%s settings)", key, int8_config)
            quantize_onnx_int8(onnx_path, building / graph_file(spec), int8_config)
        if backend == "openvino":
            log.info("model %s: converting the ONNX graph to OpenVINO", key)
            network = convert_openvino(onnx_path, building / GRAPH_FILES[("openvino", None)])
            if quantization == "int8":
                log.info("model %s: OpenVINO static int8 (NNCF), %d calibration texts", key,
                         len(calibration_texts()))
                quantize_openvino_int8(network, model, names, building / graph_file(spec))
            onnx_path.unlink()  # the OpenVINO graph is what runs; the ONNX one was its source
            onnx_path.parent.rmdir()
        manifest = {
            "model": key,
            "settings": export_slice(spec),
            "graph_file": graph_file(spec),
            "graph_inputs": names,
            "source_identity": source_identity,
            "calibration": {"path": CALIBRATION.name, "sha256": sha256_file(CALIBRATION),
                            "texts": len(calibration_texts())} if backend == "openvino" and quantization else None,
            "opset": OPSET,
            "software": package_versions(),
            "files_sha256": sha256_tree(building),
        }
        write_json(building / MANIFEST, manifest)
        shutil.rmtree(folder, ignore_errors=True)
        building.rename(folder)
    except ImportError as error:
        raise UserError(f"model {key}: backend {backend} needs {error.name} (pip install -e .): {error}") from None
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return manifest


def read_manifest(folder: str | Path) -> dict:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise UserError(f"{folder}: no {MANIFEST}; rule export_backend makes this folder (run snakemake)")
    return json.loads(path.read_text())


def check_exported(folder: str | Path, spec: dict, key: str) -> dict:
    """The manifest of ``folder``, after checking that it was exported from this model's source
    and holds the graph ``spec`` asks for (an int8 export holds its float graph too)."""
    manifest = read_manifest(folder)
    installed = runtime_versions(spec)
    made_with = {name: manifest.get("software", {}).get(name) for name in installed}
    if made_with != installed:
        changed = ", ".join(f"{name} {made_with[name]} -> {installed[name]}" for name in installed
                            if made_with[name] != installed[name])
        raise UserError(f"{folder} was exported with other versions than this environment has ({changed}); "
                        "run snakemake to export it again (rule export_backend's params hold the versions)")
    # Which quantization is the graph file's business: the float graph is in every export.
    def base(settings):
        return {**settings, "quantization": None, "quantization_config": None}

    if base(manifest["settings"]) != base(export_slice(spec)) or graph_file(spec) not in manifest["files_sha256"]:
        raise UserError(
            f"{folder} was exported for {manifest['settings']} and holds {sorted(manifest['files_sha256'])}, "
            f"but model {key} needs {graph_file(spec)} of {export_slice(spec)}; run snakemake to export it again"
        )
    return manifest


def graph_sha256(manifest: dict, graph: str) -> dict[str, str]:
    """sha256 of the files of one graph (OpenVINO: its .xml and .bin)."""
    stem = graph.rsplit(".", 1)[0]
    return {name: sha for name, sha in manifest["files_sha256"].items() if name.rsplit(".", 1)[0] == stem}
