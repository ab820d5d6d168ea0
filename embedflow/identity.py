"""The identity of an encoder: everything that can change a vector it makes.

One function, ``encoder_identity(spec)``, serves the encoder's provenance and the
vector cache (``embedflow.cache``), which keys its entries by
``identity_key(identity)``: two specs with the same identity make the same
vectors from the same text, and any difference in what makes a vector (weights,
adapter, head, precision, prompt, sequence length, normalization, truncation,
backend) gives another key. Paths are not part of it (a model folder moved
keeps its identity; its files' sha256 are the identity), and neither are
settings of speed (batch size, device, threads).

Plain Python, no torch: ``embedflow plan`` computes it without loading a model.
Model files are hashed once per process (memo by path, size and mtime); a
file of a Hugging Face hub snapshot is a link to a blob named by its sha256,
which is read instead of hashing gigabytes of weights again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from embedflow.backends import onnx_int8_entry, runtime_versions
from embedflow.backends.http_settings import VECTOR_KEYS as HTTP_VECTOR_KEYS, is_http, vector_slice
from embedflow.bundled import BUNDLED_MODELS, BUNDLED_PREFIX, bundled_folder
from embedflow.errors import ConfigError
from embedflow.schema import defaults

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
# Files of a model folder that change no vector: docs, git and Snakemake's bookkeeping.
IGNORED_FILES = re.compile(r"(^|/)(\.[^/]*|README(\.[a-z]+)?)$", re.IGNORECASE)
# Model settings that change a vector (config.MODEL_OUTPUT_KEYS without the paths).
SPEC_VECTOR_KEYS = (
    "compute_precision", "document_prompt", "max_seq_length", "normalize", "truncate_dim", "trust_remote_code",
)
_SHA256_NAME = re.compile(r"^[0-9a-f]{64}$")


# --- where a model comes from -------------------------------------------------


@dataclass(frozen=True)
class ModelSource:
    kind: str  # bundled | local | hub
    name_or_path: str


def resolve_source(source: str) -> ModelSource:
    if source.startswith(BUNDLED_PREFIX):
        name = source[len(BUNDLED_PREFIX) :]
        if name not in BUNDLED_MODELS:
            raise ConfigError(
                f"unknown bundled model {name!r}; bundled models: {sorted(BUNDLED_MODELS)}"
            )
        return ModelSource("bundled", str(bundled_folder(name)))
    if source.startswith((".", "/", "~")) or Path(source).expanduser().exists():
        path = Path(source).expanduser()
        if not path.is_dir():
            raise ConfigError(f"model path {source} is not a folder")
        return ModelSource("local", str(path.resolve()))
    return ModelSource("hub", source)


def hub_snapshot(name: str, revision: str | None) -> Path | None:
    """The local snapshot folder of a hub model (its name is the commit), without network."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, revision=revision, local_files_only=True))
    except Exception:  # not in the local cache in the layout we know: identity by name only
        return None


def model_folder(spec: dict) -> Path | None:
    """Where the model's files are on this machine (None: a hub model not downloaded yet)."""
    source = resolve_source(spec["source"])
    if source.kind == "hub":
        return hub_snapshot(source.name_or_path, spec.get("revision"))
    return Path(source.name_or_path)


# --- hashing files, once per process --------------------------------------------

_MEMO: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | Path) -> str:
    """sha256 of a file, memoized by path, size and mtime; a hub blob's own name when it is one."""
    path = Path(path)
    target = path.resolve()
    if path.is_symlink() and _SHA256_NAME.match(target.name) and target.parent.name == "blobs":
        return target.name  # huggingface_hub names an LFS blob by its sha256
    stat = target.stat()
    memo_key = (str(target), stat.st_size, stat.st_mtime_ns)
    if memo_key not in _MEMO:
        digest = hashlib.sha256()
        with open(target, "rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
        _MEMO[memo_key] = digest.hexdigest()
    return _MEMO[memo_key]


def weights_sha256(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): file_sha256(path)
        for path in sorted(Path(folder).rglob("*"))
        if path.suffix in WEIGHT_SUFFIXES and path.is_file()
    }


def files_sha256(folder: str | Path) -> dict[str, str]:
    """sha256 of every file of a folder that can change a vector (weights, configs,
    tokenizer, a head's layers), by relative path."""
    root = Path(folder)
    hashes = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if path.is_file() and not IGNORED_FILES.search(relative):
            hashes[relative] = file_sha256(path)
    return hashes


def digest_of(hashes: dict[str, str]) -> str:
    """One sha256 over a folder's file hashes."""
    return hashlib.sha256(canonical(hashes).encode()).hexdigest()


def canonical(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# --- the identity -----------------------------------------------------------------


def encoder_identity(spec: dict) -> dict:
    """Everything in ``spec`` (a model as ``variants.resolve`` gives it) and in its files
    that can change a vector; JSON primitives only."""
    # A setting left out (or None, which the schema allows only where None is the default)
    # is its default: the same identity however the spec was built.
    spec = {**defaults(name="model"), **{key: value for key, value in spec.items() if value is not None}}
    if is_http(spec):
        return _http_model_identity(spec)
    source = resolve_source(spec["source"])
    folder = model_folder(spec)
    identity = {
        "source": spec["source"] if source.kind != "local" else None,  # a local folder: its files say it
        "kind": source.kind,
        "revision": spec.get("revision") if source.kind == "hub" else None,
        "resolved_revision": folder.name if source.kind == "hub" and folder else None,
        "files_sha256": _model_files_digest(source, folder),
        "adapter_sha256": digest_of(files_sha256(spec["adapter"])) if spec.get("adapter") else None,
        **{key: spec.get(key) for key in SPEC_VECTOR_KEYS},
        "backend": spec.get("backend") or "torch",
        "quantization": spec.get("quantization"),
        "http": _http_identity(spec.get("http")),
        "variant": _variant_identity(spec.get("variant")),
    }
    identity.update(onnx_int8_entry(spec))  # only where it applies: other models' keys stay as they were
    runtime = runtime_versions(spec)
    if runtime is not None:  # an exported graph: what made it and runs it (torch keys stay as they were)
        identity["runtime"] = runtime
    return identity


def _http_model_identity(spec: dict) -> dict:
    """An API model has no files here: the provider, model, base URL (the provider's own when
    left out) and dimensions name it, with the settings that change its vectors on this side."""
    return {
        "source": spec["source"],
        "kind": "http",
        **{key: spec.get(key) for key in SPEC_VECTOR_KEYS},
        "backend": "http",
        "http": vector_slice(spec["http"]),
        "variant": _variant_identity(spec.get("variant")),
    }


def _model_files_digest(source: ModelSource, folder: Path | None) -> str | None:
    if folder is None:
        return None
    if source.kind == "hub":
        # the commit (resolved_revision) names every file; the weights' hashes are a check on it
        return digest_of(weights_sha256(folder))
    return digest_of(files_sha256(folder))


def _http_identity(http: dict | None) -> dict | None:
    if not http:
        return None
    return {key: http.get(key) for key in HTTP_VECTOR_KEYS}


def _variant_identity(variant: dict | None) -> dict | None:
    """A variant's way and dim; a PCA's file by its sha256 (it holds the fit's settings). A
    trained head's folder is the model's source, hashed with its files; a truncation is
    the spec's truncate_dim."""
    if not variant:
        return None
    identity = {"way": variant["way"], "dim": variant["dim"]}
    if variant.get("path"):
        identity["sha256"] = file_sha256(variant["path"]) if os.path.exists(variant["path"]) else None
    return identity


def identity_key(identity: dict) -> str:
    """The hex sha256 of the identity's canonical JSON: the cache's namespace."""
    return hashlib.sha256(canonical(identity).encode()).hexdigest()


def is_resolved(identity: dict) -> bool:
    """Whether the identity names the model's files (a hub model not downloaded yet does not:
    its key changes once it is, so it can be no cache key before)."""
    if identity["backend"] == "http":
        return True
    return identity["files_sha256"] is not None
