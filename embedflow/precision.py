"""Output precisions: the one dtype map, and the casts from float32.

Every output precision is derived from the float32 embeddings of one model
pass (docs/design.md, "One model pass per model"). ``int8`` follows
sentence-transformers' ``quantize_embeddings`` (per-dimension min/max ranges
calibrated on the corpus, 256 buckets, stored as value - 128) so that queries
quantized by sentence-transformers with the same ranges land in the same
buckets. ``binary`` is sentence-transformers' ``ubinary``: the sign bits,
packed 8 per byte, big-endian within a byte (as ``np.packbits`` and pgvector's
``bit`` type read them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from embedflow.schema import precision_names


@dataclass(frozen=True)
class Precision:
    name: str
    numpy_dtype: np.dtype  # of the values in the Parquet list column
    is_float: bool
    packed: bool = False  # binary: dim/8 bytes per row

    def width(self, dim: int) -> int:
        """Number of list items per row for an embedding of ``dim`` dimensions."""
        return (dim + 7) // 8 if self.packed else dim


# Arrow has no bfloat16: bfloat16 values are stored as float32 values that are
# exactly representable in bfloat16 (docs/design.md).
_DTYPES: dict[str, Precision] = {
    "float32": Precision("float32", np.dtype(np.float32), is_float=True),
    "float16": Precision("float16", np.dtype(np.float16), is_float=True),
    "bfloat16": Precision("bfloat16", np.dtype(np.float32), is_float=True),
    "int8": Precision("int8", np.dtype(np.int8), is_float=False),
    "binary": Precision("binary", np.dtype(np.uint8), is_float=False, packed=True),
}
# The list of precisions is written once, in the config schema (a KeyError here
# names one the schema gained without a dtype).
PRECISIONS: dict[str, Precision] = {name: _DTYPES[name] for name in precision_names()}
SOURCE_PRECISION = "float32"
DERIVED_PRECISIONS = tuple(name for name in PRECISIONS if name != SOURCE_PRECISION)


def get_precision(name: str) -> Precision:
    try:
        return PRECISIONS[name]
    except KeyError:
        raise ValueError(f"unknown precision {name!r}; expected one of {list(PRECISIONS)}") from None


def round_to_bfloat16(values: np.ndarray) -> np.ndarray:
    """float32 → the nearest bfloat16 value (round half to even), kept as float32."""
    values = np.ascontiguousarray(values, dtype=np.float32)
    bits = values.view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000).astype(np.uint32)
    out = rounded.view(np.float32)
    return np.where(np.isnan(values), values, out)


class Int8Ranges:
    """Per-dimension [min, max] of the corpus's float32 embeddings, accumulated batch by batch."""

    def __init__(self, dim: int):
        self.low = np.full(dim, np.inf, dtype=np.float32)
        self.high = np.full(dim, -np.inf, dtype=np.float32)
        self.rows = 0

    def update(self, batch: np.ndarray) -> None:
        if len(batch):
            np.minimum(self.low, batch.min(axis=0), out=self.low)
            np.maximum(self.high, batch.max(axis=0), out=self.high)
            self.rows += len(batch)

    def array(self) -> np.ndarray:
        """Shape (2, dim), the layout sentence-transformers' ``ranges`` argument takes."""
        if not self.rows:
            raise ValueError("int8 ranges need at least one embedding to calibrate on")
        return np.vstack([self.low, self.high])


def _int8_steps(ranges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    starts = ranges[0].astype(np.float32)
    steps = (ranges[1].astype(np.float32) - starts) / 255
    return starts, np.where(steps == 0, 1, steps).astype(np.float32)


def quantize_int8(values: np.ndarray, ranges: np.ndarray) -> np.ndarray:
    starts, steps = _int8_steps(ranges)
    buckets = np.clip(np.floor((values - starts) / steps), 0, 255)
    return (buckets - 128).astype(np.int8)


def dequantize_int8(codes: np.ndarray, ranges: np.ndarray) -> np.ndarray:
    """The centre of each bucket, as float32."""
    starts, steps = _int8_steps(ranges)
    return ((codes.astype(np.float32) + 128.5) * steps + starts).astype(np.float32)


def pack_binary(values: np.ndarray) -> np.ndarray:
    return np.packbits(values > 0, axis=-1)


def unpack_binary(packed: np.ndarray, dim: int) -> np.ndarray:
    """Bits as 0/1 uint8, shape (rows, dim)."""
    return np.unpackbits(packed, axis=-1, count=dim)


def convert(values: np.ndarray, precision: str, int8_ranges: np.ndarray | None = None) -> np.ndarray:
    """float32 embeddings (rows, dim) → the values stored for ``precision``."""
    values = np.asarray(values, dtype=np.float32)
    if precision == "float32":
        return values
    if precision == "float16":
        return values.astype(np.float16)
    if precision == "bfloat16":
        return round_to_bfloat16(values)
    if precision == "int8":
        if int8_ranges is None:
            raise ValueError("int8 needs calibration ranges")
        return quantize_int8(values, int8_ranges)
    if precision == "binary":
        return pack_binary(values)
    raise ValueError(f"unknown precision {precision!r}")


def to_float32(stored: np.ndarray, precision: str, dim: int, int8_ranges=None) -> np.ndarray:
    """Stored values → comparable float32 vectors (binary: ±1 per bit)."""
    if get_precision(precision).is_float:
        return stored.astype(np.float32)
    if precision == "int8":
        return dequantize_int8(stored, int8_ranges)
    return unpack_binary(stored, dim).astype(np.float32) * 2 - 1
