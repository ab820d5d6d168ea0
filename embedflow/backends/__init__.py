"""Encoder backends: which runtime turns a model's tokens into vectors (docs/backends.md).

``torch`` (the default) runs the model as sentence-transformers loads it. ``onnx`` and
``openvino`` run an exported graph of the model's Transformer module in ONNX Runtime or
OpenVINO, with sentence-transformers' own tokenizer, pooling, normalization and truncation
around it; rule ``export_backend`` writes that graph once per model under
``results/backends/<model>/`` and the model's jobs read it. ``http`` is an embeddings API
(embedflow.backends.http). ``quantization: int8`` applies to the exported backends only.

Plain Python: the Snakefile imports it while planning (no torch, no runtime).
"""

from __future__ import annotations

from functools import lru_cache

from embedflow.errors import ConfigError

BACKENDS = ("torch", "onnx", "openvino", "http")
# Backends that run a graph exported by rule export_backend.
EXPORTED = ("onnx", "openvino")
QUANTIZATIONS = (None, "int8")
# ONNX dynamic int8's settings, by the CPU they are made for: the names and weight types of
# sentence-transformers' export_dynamic_quantized_onnx_model(model, quantization_config)
# (optimum's AutoQuantizationConfig): unsigned activations always, weights unsigned for
# AVX2 (its u8 x s8 products can saturate), signed elsewhere (VNNI's VPDPBUSD, ARM's SDOT).
ONNX_INT8_WEIGHTS = {"avx2": "quint8", "avx512": "qint8", "avx512_vnni": "qint8", "arm64": "qint8"}

# The graph file inside the export folder, in sentence-transformers' own layout and names
# (what `backend="onnx"` / `"openvino"` with model_kwargs={"file_name": ...} would load);
# ONNX int8's name says its settings (onnx_int8_file), OpenVINO static int8 is
# export_static_quantized_openvino_model's.
GRAPH_FILES = {
    ("onnx", None): "onnx/model.onnx",
    ("openvino", None): "openvino/openvino_model.xml",
    ("openvino", "int8"): "openvino/openvino_model_qint8_quantized.xml",
}
# The export's own record of what it made (source identity, settings, versions, file sha256s).
MANIFEST = "export.json"

# The model settings that change an exported graph: anything else (prompts, truncation,
# max_seq_length, normalization) runs outside the graph, in sentence-transformers.
EXPORT_KEYS = ("source", "revision", "trust_remote_code", "backend", "quantization")
# The distributions that write an exported graph and run it: an upgrade of one may change
# the vectors (int8 above all), so their versions are part of the export's params (it is
# made again) and of the encoder's identity (the cache keeps the old vectors apart).
RUNTIME_DISTRIBUTIONS = {
    "onnx": ("torch", "transformers", "onnx", "onnxscript", "onnxruntime"),
    "openvino": ("torch", "transformers", "onnx", "onnxscript", "openvino", "nncf"),
}


def backend_of(spec: dict) -> str:
    return spec.get("backend") or "torch"


def is_exported(spec: dict) -> bool:
    return backend_of(spec) in EXPORTED


def computes_on_gpu(spec: dict) -> bool:
    """Whether the model's jobs may compute on a GPU here: torch only (onnx and openvino run
    on the CPU, an http model on its server), so only torch model jobs take a GPU slot."""
    return backend_of(spec) == "torch"


def onnx_int8_config(spec: dict) -> str | None:
    """The CPU an ONNX int8 graph is quantized for (``quantization_config``); None for any
    other backend or quantization, which the key does not touch (OpenVINO int8 is static,
    NNCF's, and picks its CPU kernels when it runs)."""
    if backend_of(spec) == "onnx" and spec.get("quantization") == "int8":
        return spec.get("quantization_config") or _default_onnx_int8()
    return None


def onnx_int8_entry(spec: dict) -> dict[str, str]:
    """``{"quantization_config": ...}`` for an ONNX int8 model, else ``{}``: merged into the
    export's params, the model's params and both identities only where it applies, so that
    every other model's keys (and cached vectors) stay as they were."""
    config = onnx_int8_config(spec)
    return {"quantization_config": config} if config else {}


def _default_onnx_int8() -> str:
    from embedflow.schema import default

    return default("quantization_config", name="model")


def onnx_int8_file(config: str) -> str:
    return f"onnx/model_{ONNX_INT8_WEIGHTS[config]}_{config}.onnx"


def graph_file(spec: dict) -> str:
    config = onnx_int8_config(spec)
    return onnx_int8_file(config) if config else GRAPH_FILES[(backend_of(spec), spec.get("quantization"))]


def export_slice(spec: dict) -> dict:
    """What makes the graph; ``quantization_config`` only where it applies, so that it
    reruns the exports of ONNX int8 models alone."""
    return {**{key: spec.get(key) for key in EXPORT_KEYS}, **onnx_int8_entry(spec)}


def runtime_versions(spec: dict) -> dict[str, str | None] | None:
    """Installed versions of what makes and runs this model's graph; None for torch and http.
    Package metadata only: nothing is imported."""
    if not is_exported(spec):
        return None
    return dict(_installed(RUNTIME_DISTRIBUTIONS[backend_of(spec)]))


@lru_cache(maxsize=None)
def _installed(names: tuple[str, ...]) -> tuple:
    # Once per process: planning computes identities and params for every job.
    from embedflow.provenance import distribution_versions

    return tuple(distribution_versions(names).items())


def export_key(key: str, spec: dict) -> str:
    """Whose export a model key runs: its own, or for a truncation or PCA variant (the same
    network, reduced after it) its base's. A projection head is a new model: its own."""
    variant = spec.get("variant")
    if variant and variant["way"] in ("truncate_dim", "pca"):
        return variant["base"]
    return key


def check_backend(key: str, spec: dict) -> None:
    """What the schema cannot say about a model's backend, before any job runs."""
    backend = backend_of(spec)
    where = f"models.{key}"
    if backend not in BACKENDS:
        raise ConfigError(f"{where}: backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    quantization = spec.get("quantization")
    if quantization not in QUANTIZATIONS:
        raise ConfigError(f"{where}: quantization must be null or int8, got {quantization!r}")
    if quantization and backend not in EXPORTED:
        raise ConfigError(
            f"{where}: quantization: {quantization} needs backend onnx or openvino (got {backend}); "
            "for smaller stored vectors use precisions (int8, binary) instead"
        )
    config = spec.get("quantization_config") or _default_onnx_int8()
    if config not in ONNX_INT8_WEIGHTS:
        raise ConfigError(f"{where}: quantization_config must be one of {', '.join(ONNX_INT8_WEIGHTS)}, got {config!r}")
    if backend not in EXPORTED:
        return
    if spec.get("compute_precision", "float32") != "float32":
        raise ConfigError(
            f"{where}: backend {backend} runs its graph in float32 (or int8 with quantization: int8); "
            f"compute_precision {spec['compute_precision']!r} is for backend torch"
        )
    if spec.get("adapter"):
        raise ConfigError(
            f"{where}: backend {backend} exports the base model, without the adapter {spec['adapter']}; "
            "merge it first (peft's merge_and_unload, then save the model) and use that folder as source"
        )


def check_backends(models: dict) -> None:
    """check_backend for every model key, variants resolved into their base's settings."""
    from embedflow.variants import is_variant

    for key, spec in models.items():
        check_backend(key, models[spec["base"]] if is_variant(spec) else spec)
