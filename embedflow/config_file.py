"""The workflow's config file read as the Snakefile reads it, for the CLI (``embedflow check``,
``embedflow plan``). Apart from embedflow.config because it validates with Snakemake's own
validator, which no rule's environment needs."""

from __future__ import annotations

from pathlib import Path

from embedflow.variants import check_models, is_variant


def load_config(path: str | Path) -> dict:
    """The workflow's config file with its schemas' defaults filled in, as the Snakefile sees it."""
    import yaml
    from snakemake.utils import validate

    path = Path(path).resolve()
    schemas = Path(__file__).resolve().parents[1] / "config"
    config = yaml.safe_load(path.read_text()) or {}
    validate(config, str(schemas / "config.schema.yaml"))
    for spec in config["models"].values():
        schema = "variant.schema.yaml" if is_variant(spec) else "model.schema.yaml"
        validate(spec, str(schemas / schema))
    check_models(config["models"])
    return config
