"""Variants: smaller vectors from a model, each under its own model key.

A variant's spec names a ``base`` model (a key of ``models:`` with a
``source``) and exactly one way to reduce its vectors:

* ``truncate_dim``: Matryoshka truncation. Derived from the base's float32
  file (truncate, re-normalize), so the corpus is not encoded again; queries
  go through the base model with ``truncate_dim`` set, which is the same thing.
* ``pca``: a PCA (or, with ``center: false``, a TruncatedSVD) fitted on a
  sample of the base's float32 vectors by rule ``fit_pca``; applied to the
  base's corpus vectors and to query vectors, then re-normalized.
* ``projection_head``: ``Dense(d -> k, bias=False)`` + ``Normalize`` trained
  on (query, passage) pairs on top of the (frozen) base model by rule
  ``train_head`` and saved as a sentence-transformers folder, which then
  embeds the corpus like any model.

``resolve`` turns a variant into the spec the encoder and every later rule
read (source, prompts, precision, ... as for a model, plus ``variant``), so
verify, load, index and evaluate treat a variant like any other model.
This module is plain Python: the Snakefile imports it while planning.
"""

from __future__ import annotations

from embedflow.backends.http_settings import check_http_model, is_http, source_label
from embedflow.errors import ConfigError
from embedflow.paths import HEAD_FOLDER, PCA_FILE

WAYS = ("truncate_dim", "pca", "projection_head")
# The keys of a variant's way that change its vectors (everything else in the block
# is validated but never in a spec).
PCA_KEYS = ("dim", "sample_rows", "center", "seed")
HEAD_KEYS = (
    "dim", "pairs", "epochs", "batch_size", "learning_rate", "unfreeze_backbone",
    "backbone_learning_rate", "scale", "seed",
)


def is_variant(spec: dict) -> bool:
    return "base" in spec


def way_of(spec: dict) -> str | None:
    """truncate_dim | pca | projection_head for a variant; None for a model."""
    if not is_variant(spec):
        return None
    ways = [way for way in WAYS if spec.get(way) is not None]
    if len(ways) != 1:
        raise ConfigError(f"a variant needs exactly one of {', '.join(WAYS)}; got {ways or 'none'}")
    return ways[0]


def check_models(models: dict) -> None:
    """What the schemas cannot say: a variant's base exists, is a model, and is normalized."""
    for key, spec in models.items():
        if not is_variant(spec):
            check_http_model(key, spec)
            continue
        try:
            way_of(spec)
        except ConfigError as error:
            raise ConfigError(f"models.{key}: {error}") from None
        base = spec["base"]
        if base not in models:
            raise ConfigError(f"models.{key}: base {base!r} is not a key of models ({', '.join(sorted(models))})")
        if is_variant(models[base]):
            raise ConfigError(
                f"models.{key}: base {base!r} is itself a variant; a variant reduces a model with a source"
            )
        if not models[base].get("normalize", True):
            raise ConfigError(
                f"models.{key}: base {base!r} has normalize: false; variants re-normalize after reducing, "
                "so their base must be normalized too"
            )
        if spec.get("projection_head") is not None and is_http(models[base]):
            raise ConfigError(f"models.{key}: a projection head needs the weights of its base; {base!r} is an http model")
        if spec.get("projection_head") is not None and models[base].get("truncate_dim"):
            # sentence-transformers truncates in encode(), after the modules: a head
            # appended to the modules would see the full dimension, not the truncated one.
            raise ConfigError(
                f"models.{key}: a projection head cannot sit on base {base!r}, which has truncate_dim; "
                "use a base without truncate_dim (the head reduces the dimension itself)"
            )
        base_dim = models[base].get("truncate_dim")
        dim = variant_dim(spec)
        if base_dim and dim >= base_dim:
            raise ConfigError(f"models.{key}: dim {dim} is not below base {base!r}'s truncate_dim {base_dim}")


def variant_dim(spec: dict) -> int:
    way = way_of(spec)
    return spec["truncate_dim"] if way == "truncate_dim" else spec[way]["dim"]


def named(spec: dict) -> dict:
    """A model spec with its ``source``: an http model's is a label (``http:<provider>/<model>``)."""
    return {**spec, "source": source_label(spec["http"])} if is_http(spec) else spec


def resolve(models: dict, key: str) -> dict:
    """The spec of a model key as the encoder and every rule read it. A model's own
    spec gets ``variant: None``; a variant gets its base's spec, changed by its way."""
    spec = models[key]
    way = way_of(spec)
    if way is None:
        return {**named(spec), "variant": None}
    base = named(models[spec["base"]])
    variant = {"base": spec["base"], "way": way, "dim": variant_dim(spec)}
    if way == "truncate_dim":
        return {**base, "truncate_dim": spec["truncate_dim"], "variant": variant}
    if way == "pca":
        settings = {name: spec["pca"][name] for name in PCA_KEYS}
        variant.update(settings, path=PCA_FILE.format(model=key))
        return {**base, "variant": variant}
    settings = {name: spec["projection_head"][name] for name in HEAD_KEYS}
    if not settings["unfreeze_backbone"]:
        del settings["backbone_learning_rate"]  # only a step of the backbone uses it
    variant.update(settings)
    # The trained folder holds the base (with its adapter and truncation baked in) and the head.
    return {
        **base,
        "source": HEAD_FOLDER.format(model=key),
        "revision": None,
        "adapter": None,
        "truncate_dim": None,
        "variant": variant,
    }


def keys_by_way(models: dict) -> dict[str | None, list[str]]:
    """Model keys grouped by way (None: models with a source), sorted."""
    groups: dict[str | None, list[str]] = {None: [], **{way: [] for way in WAYS}}
    for key in sorted(models):
        groups[way_of(models[key])].append(key)
    return groups


def variant_record(variant: dict) -> dict:
    """A variant's part of a model identity: its way and settings, and a PCA file's sha256."""
    from embedflow.hashing import sha256_file

    record = dict(variant)
    if variant.get("path"):
        record["sha256"] = sha256_file(variant["path"])
    return record


def reduction_of(variant: dict | None) -> dict | None:
    """What an embeddings file's metadata says about its variant (``reduction``)."""
    return None if not variant else {key: variant[key] for key in ("base", "way", "dim")}


def variant_labels(resolved: dict) -> dict:
    """Which model keys are variants of which base, and how (``resolve``d specs by key)."""
    return {key: reduction_of(spec["variant"]) for key, spec in resolved.items() if spec["variant"]}
