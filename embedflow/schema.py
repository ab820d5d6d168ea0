"""The config schemas (config/*.schema.yaml): the one place where a default is written.

Snakemake fills the defaults into the config at parse time; code that builds
settings without a config (the command line, tests, benchmarks) takes the same
defaults from here instead of repeating them. Plain Python and PyYAML only:
the Snakefile imports it while planning.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

SCHEMAS = Path(__file__).resolve().parents[1] / "config"


@cache
def schema(name: str = "config") -> dict:
    import yaml

    # libyaml's loader where PyYAML has it: the same dict in an eighth of the time (0.009 vs
    # 0.074 s for config.schema.yaml), paid by every Snakemake start and CLI call.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.load((SCHEMAS / f"{name}.schema.yaml").read_text(), Loader=loader)


def defaults(section: str | None = None, name: str = "config") -> dict:
    """The defaults of one section's keys (``"index"``), or of the top level (None)."""
    properties = schema(name)["properties"]
    if section is not None:
        properties = properties[section]["properties"]
    return {key: spec["default"] for key, spec in properties.items() if "default" in spec}


def default(path: str, name: str = "config"):
    """One default by dotted path: ``default("embed.window_rows")``."""
    section, _, key = path.rpartition(".")
    return defaults(section or None, name)[key]


def precision_names() -> list[str]:
    """The output precisions, in the schema's order (embedflow.precision maps each to its dtype)."""
    return list(schema()["properties"]["precisions"]["items"]["enum"])
