"""Defaults and the precision list are written once, in the config schemas."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from embedflow.schema import default, defaults, precision_names


def test_settings_take_their_defaults_from_the_schema():
    from embedflow.database import DatabaseSettings
    from embedflow.embed import EmbedSettings
    from embedflow.index import IndexSettings

    index = defaults("index")
    for field in dataclasses.fields(IndexSettings):
        assert field.default == index[field.name], field.name
    assert DatabaseSettings().pgdata == default("database.pgdata")
    embed = EmbedSettings("m", {})
    assert embed.window_rows == default("embed.window_rows")
    assert embed.batch_size == default("batch_size", "model")
    assert (embed.device, embed.require_cuda) == (default("embed.device"), default("embed.require_cuda"))
    assert (embed.sample, embed.seed) == (default("test_mode.sample"), default("test_mode.seed"))


def test_the_precision_list_is_the_schemas():
    from embedflow.precision import DERIVED_PRECISIONS, PRECISIONS

    assert list(PRECISIONS) == precision_names() == ["float32", "float16", "bfloat16", "int8", "binary"]
    assert DERIVED_PRECISIONS == tuple(precision_names()[1:])


def test_an_unknown_key_has_no_default():
    with pytest.raises(KeyError):
        default("index.no_such_key")


def test_the_public_api_resolves_and_importing_the_package_stays_cheap():
    import embedflow

    for name in embedflow.__all__:
        assert getattr(embedflow, name) is not None, name
    with pytest.raises(AttributeError):
        embedflow.no_such_name  # noqa: B018
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, embedflow; print(sorted(m for m in ('torch', 'numpy', 'pyarrow') if m in sys.modules))"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    assert loaded == "[]"
