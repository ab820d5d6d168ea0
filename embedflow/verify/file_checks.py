"""Checks of the file as a file: its provenance, its metadata, its layout and dim.

``parquet_readable`` (does it read end to end) is built by ``measure`` from
what pass one read.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa

from embedflow.embeddings_file import EmbeddingsMetadata
from embedflow.errors import UserError
from embedflow.precision import get_precision
from embedflow.probes_file import Probes
from embedflow.verify.report import Check, Report, VerifySettings, equals, none_of


def read_record(path) -> dict:
    """A provenance record."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise UserError(f"{path}: cannot read the provenance record ({error})") from None


def provenance_check(settings: VerifySettings, record: dict, embed_record, sha256, size, derived) -> Check:
    problems = []
    output = record.get("output", {})
    if output.get("sha256") != sha256:
        problems.append(f"file sha256 {sha256[:12]}… but its provenance records {str(output.get('sha256'))[:12]}…")
    if output.get("bytes") != size:
        problems.append(f"file has {size} bytes, its provenance records {output.get('bytes')}")
    wildcards = record.get("wildcards", {})
    for key, value in (("model", settings.model_key), ("precision", settings.precision)):
        if key in wildcards and wildcards[key] != value:
            problems.append(f"provenance wildcard {key}={wildcards[key]!r}, expected {value!r}")
    if derived:
        source_sha = embed_record.get("output", {}).get("sha256")
        inputs = [item.get("sha256") for item in record.get("inputs", [])]
        if source_sha not in inputs:
            problems.append("was not derived from the current float32 file (its input sha256 differs)")
    embedded_with = embed_record.get("config", {}).get("model", {})
    for key in ("source", "revision", "adapter", "truncate_dim", "document_prompt", "compute_precision", "normalize"):
        if key in embedded_with and key in settings.model and embedded_with[key] != settings.model[key]:
            problems.append(f"embedded with {key}={embedded_with[key]!r}, configured {settings.model[key]!r}")
    return none_of("provenance", len(problems), "; ".join(problems) or "file sha256 and size, wildcards and model "
                   "config agree with the provenance records", unit="mismatches")


def metadata_check(settings: VerifySettings, meta: EmbeddingsMetadata, embed_record) -> Check:
    expected = {
        "model": settings.model_key,
        "model_source": settings.model.get("source"),
        "precision": settings.precision,
        "normalized": settings.model.get("normalize"),
        "compute_precision": settings.model.get("compute_precision"),
        "text_field": settings.selection.get("text_field"),
        "dim": embed_record.get("embedding", {}).get("dim"),
        "corpus_sha256": embed_record.get("corpus", {}).get("sha256"),
    }
    problems = [
        f"{key}: file says {getattr(meta, key)!r}, expected {value!r}"
        for key, value in expected.items()
        if value is not None and getattr(meta, key) != value
    ]
    return none_of("metadata", len(problems), "; ".join(problems) or
                   "model, source, precision, normalization, compute precision, text field, dim and corpus "
                   "sha256 agree with the config and the embed provenance", unit="mismatches")


KEY_COLUMNS = ("id", "text_sha256")


def key_columns_usable(schema: pa.Schema) -> bool:
    """Whether the id and text_sha256 columns exist as strings, so rows can be fingerprinted."""
    return all(schema.get_field_index(name) >= 0 and schema.field(name).type == pa.string()
               for name in KEY_COLUMNS)


def layout_check(settings: VerifySettings, meta: EmbeddingsMetadata, schema: pa.Schema) -> tuple[Check, bool]:
    precision = get_precision(settings.precision)
    problems = []
    decodable = True
    for name in KEY_COLUMNS:
        if schema.get_field_index(name) < 0 or schema.field(name).type != pa.string():
            problems.append(f"column {name!r} is missing or not a string")
            decodable = False
    width = precision.width(meta.dim)
    want = pa.list_(pa.from_numpy_dtype(precision.numpy_dtype), width)
    if schema.get_field_index("embedding") < 0:
        problems.append("no 'embedding' column")
        decodable = False
    elif schema.field("embedding").type != want:
        problems.append(f"embedding is {schema.field('embedding').type}, expected {want}")
        decodable = False
    if settings.precision == "int8":
        ranges = meta.ranges_array()
        if ranges is None:
            problems.append("int8 file without int8_ranges in its metadata")
            decodable = False
        elif ranges.shape != (2, meta.dim):
            problems.append(f"int8_ranges has shape {ranges.shape}, expected (2, {meta.dim})")
            decodable = False
        elif not np.isfinite(ranges).all() or (ranges[0] > ranges[1]).any():
            problems.append("int8_ranges are not finite, or a minimum exceeds its maximum")
    elif meta.int8_ranges is not None:
        problems.append(f"{settings.precision} file carries int8_ranges")
    found = schema.field("embedding").type if schema.get_field_index("embedding") >= 0 else None
    describe = {
        "float32": "float32 values",
        "float16": "float16 values",
        "bfloat16": "float32 values that bfloat16 represents exactly",
        "int8": "int8 codes, with (2, dim) calibration ranges in the metadata",
        "binary": "sign bits packed 8 per byte, unused bits zero",
    }[settings.precision]
    value = _list_type(found) if found is not None else "no embedding column"
    check = equals(
        "layout",
        "; ".join([value, *problems]) if problems else value,
        _list_type(want),
        "; ".join(problems) or f"id and text_sha256 strings; embedding: {describe}",
    )
    return check, decodable


def layout_problem(report: Report, problem: str) -> None:
    """A layout problem found while streaming (bfloat16 values, binary padding bits)."""
    layout = report.check("layout")
    layout.value = f"{layout.value}; {problem}"
    layout.detail = problem


def _list_type(value_type: pa.DataType) -> str:
    if pa.types.is_fixed_size_list(value_type):
        try:
            name = np.dtype(value_type.value_type.to_pandas_dtype()).name
        except (NotImplementedError, TypeError):
            name = str(value_type.value_type)
        return f"{name}[{value_type.list_size}]"
    return str(value_type)


def dim_check(settings: VerifySettings, meta: EmbeddingsMetadata, probe: Probes) -> Check:
    detail = f"the model gives {probe.dim} dims" + (
        f" (truncate_dim {settings.model['truncate_dim']})" if settings.model.get("truncate_dim") else ""
    )
    return equals("dim", meta.dim, probe.dim, detail)
