"""The casts from float32 agree with torch and sentence-transformers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sentence_transformers.util.quantization import quantize_embeddings

from embedflow.precision import (
    Int8Ranges,
    convert,
    dequantize_int8,
    get_precision,
    round_to_bfloat16,
    to_float32,
    unpack_binary,
)

RNG = np.random.default_rng(0)
VECTORS = RNG.normal(size=(257, 40)).astype(np.float32)


def test_bfloat16_rounding_matches_torch():
    values = np.concatenate([VECTORS.ravel(), [0.0, -0.0, 1e-40, 3.0e38, np.inf, -np.inf]]).astype(np.float32)
    expected = torch.from_numpy(values).to(torch.bfloat16).to(torch.float32).numpy()
    np.testing.assert_array_equal(round_to_bfloat16(values), expected)


def test_int8_matches_sentence_transformers():
    ranges = Int8Ranges(40)
    for block in np.array_split(VECTORS, 5):  # calibrated batch by batch
        ranges.update(block)
    expected = quantize_embeddings(VECTORS, "int8", calibration_embeddings=VECTORS)
    np.testing.assert_array_equal(convert(VECTORS, "int8", ranges.array()), expected)


def test_int8_round_trip_stays_within_one_bucket():
    ranges = np.vstack([VECTORS.min(0), VECTORS.max(0)])
    restored = dequantize_int8(convert(VECTORS, "int8", ranges), ranges)
    step = (ranges[1] - ranges[0]) / 255
    assert np.all(np.abs(restored - VECTORS) <= step * 0.5 + 1e-6)


def test_binary_matches_sentence_transformers_ubinary():
    packed = convert(VECTORS, "binary")
    np.testing.assert_array_equal(packed, quantize_embeddings(VECTORS, "ubinary"))
    assert packed.shape == (257, get_precision("binary").width(40))
    np.testing.assert_array_equal(unpack_binary(packed, 40).astype(bool), VECTORS > 0)
    assert set(np.unique(to_float32(packed, "binary", 40))) == {-1.0, 1.0}


def test_int8_needs_ranges():
    with pytest.raises(ValueError, match="calibration"):
        convert(VECTORS, "int8")
    with pytest.raises(ValueError, match="at least one"):
        Int8Ranges(4).array()


def test_unknown_precision():
    with pytest.raises(ValueError, match="unknown precision 'int4'"):
        get_precision("int4")
