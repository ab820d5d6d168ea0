"""Config slices handed to rules through ``params``.

See docs/design.md, "Params: canonical primitives".

Snakemake reruns a job when one of its params changes, so each rule gets
exactly the slice of config that changes its output, as canonical JSON text:
sorted keys, no whitespace, only JSON primitives. Dict order or YAML layout
never causes a rerun; a setting that changes speed but not results (batch
size, device) never reaches a tracked param.
"""

from __future__ import annotations

import json

from embedflow.backends import onnx_int8_entry
from embedflow.backends.http_settings import is_http, vector_slice

# Model settings that change the vectors a model produces. batch_size does not.
MODEL_OUTPUT_KEYS = (
    "source",
    "revision",
    "adapter",
    "truncate_dim",
    "document_prompt",
    "max_seq_length",
    "compute_precision",
    "normalize",
    "trust_remote_code",
)


def canonical_json(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def model_output_slice(spec: dict) -> dict:
    """``spec`` as ``variants.resolve`` gives it; a variant adds what it reduces and how."""
    output = {key: spec.get(key) for key in MODEL_OUTPUT_KEYS}
    # Only where set: the params of a torch model stay as they were before backends came.
    if spec.get("backend", "torch") != "torch":
        output["backend"] = spec["backend"]
    if spec.get("quantization"):
        output["quantization"] = spec["quantization"]
    output.update(onnx_int8_entry(spec))
    if is_http(spec):
        output["http"] = vector_slice(spec["http"])
    if spec.get("variant"):
        output["variant"] = spec["variant"]
    return output


def selection_slice(config: dict) -> dict:
    """Which chunks are embedded, from which field. Sampling keys only matter in test mode."""
    selection = {"text_field": config["text_field"]}
    test_mode = config["test_mode"]
    if test_mode.get("max_chunks") is not None:
        selection["max_chunks"] = test_mode["max_chunks"]
        selection["sample"] = test_mode["sample"]
        if test_mode["sample"] == "random":
            selection["seed"] = test_mode["seed"]
    return selection


def verify_slice(config: dict, spec: dict, precision: str) -> dict:
    """The thresholds that judge one model x precision, and only those: moving the int8 drift
    threshold reruns the int8 verify and nothing else."""
    levels = config["verify"]["thresholds"]
    thresholds = {key: levels[key] for key in ("self_retrieval", "model_reproduces")}
    if precision in levels["norm_tolerance"]:
        thresholds["norm_tolerance"] = levels["norm_tolerance"][precision]
    if precision in levels["drift"]:
        thresholds["drift"] = levels["drift"][precision]
    if precision == "int8":
        thresholds["int8_decode"] = levels["int8_decode"]
    if precision == "binary":
        thresholds["binary_decode"] = levels["binary_decode"]
    if spec.get("adapter"):
        thresholds["adapter_max_cosine"] = levels["adapter_max_cosine"]
    return thresholds


def measure_slice(config: dict) -> dict:
    """What changes the measurements of verify (besides its input files): the row sample and
    the length of the spot-check lists."""
    verify = config["verify"]
    return {key: verify[key] for key in ("sample_rows", "seed", "spot_check_k")}


def probe_slice(config: dict) -> dict:
    """What rule probe encodes: the probe queries and how many chunks it re-encodes."""
    verify = config["verify"]
    return {
        "queries": verify["probe_queries"],
        "reencode_rows": verify["reencode_rows"],
        "text_field": config["text_field"],
    }
