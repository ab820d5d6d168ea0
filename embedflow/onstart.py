"""What a run needs, checked when it starts, before its first job (the Snakefile's ``onstart``).

Each check is made only when the run has a job that needs it, and at every
such run (not cached in a job's output: today's server, today's files):

* the database, for load, index, evaluate and sweep: ``database.dsn_env`` names a
  variable that is set, the server answers, and its pgvector is at least 0.7
  (the embedded server: it starts);
* the query set, for encode_queries, evaluate and sweep; each projection head's
  pairs file, for train_head (its ``positive_id`` values are matched with the
  chunks by train_head, before its model loads); each adapter folder's
  ``adapter_config.json``, for the jobs that load a model;
* the policy: under ``on_bad_chunk: fail`` a corpus that rule preflight
  rejected chunks of (under ``skip``) is refused, unless preflight runs again.

Snakemake calls ``onstart`` only for a real run, never for ``snakemake -n``,
which stays free of these reads and of network calls. The corpus itself is
checked by rule preflight (``embedflow.preflight``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from embedflow.errors import ConfigError, InputError
from embedflow.pairs_file import parse_pairs
from embedflow.query_set import read_queries

log = logging.getLogger(__name__)

DATABASE_RULES = frozenset({"load", "index", "evaluate", "sweep"})
QUERY_RULES = frozenset({"encode_queries", "evaluate", "sweep"})
# gather: the embed jobs of a plan still to be made are known only once it is (a checkpoint)
MODEL_RULES = frozenset({"embed", "gather", "probe", "encode_queries", "train_head"})


def check_adapter(folder: str) -> None:
    config = Path(folder) / "adapter_config.json"
    if not config.is_file():
        raise InputError(f"{folder}: not a PEFT adapter folder (it has no adapter_config.json)")
    try:
        parsed = json.loads(config.read_text(encoding="utf-8-sig"))
    except (ValueError, UnicodeDecodeError) as error:
        raise InputError(f"{config}: not valid JSON ({error})") from None
    if not isinstance(parsed, dict):
        raise InputError(f"{config}: expected a JSON object, got {type(parsed).__name__}")


def check_policy(config: dict, preflight_report: str) -> None:
    """``fail`` over a corpus that an earlier preflight under ``skip`` rejected chunks of."""
    if config["on_bad_chunk"] != "fail" or not Path(preflight_report).is_file():
        return
    corpus = json.loads(Path(preflight_report).read_text())["corpus"]
    if corpus["rejected"]:
        raise ConfigError(
            f"on_bad_chunk is fail, but {corpus['path']} has {corpus['rejected']} chunk(s) that preflight "
            f"rejected (listed in {corpus['rejected_file']}); fix them, or set on_bad_chunk: skip"
        )


def check_database(config: dict) -> dict:
    from embedflow.database import DatabaseSettings, connect, describe_target, server_versions

    settings = DatabaseSettings(pgdata=config["database"]["pgdata"], dsn_env=config["database"]["dsn_env"])
    with connect(settings) as connection:  # the DSN variable, the server, pgvector >= 0.7
        versions = server_versions(connection)
    log.info("database %s: PostgreSQL %s, pgvector %s", describe_target(settings), versions["postgresql"],
             versions["pgvector"])
    return versions


def check_run(config: dict, rules: set[str], *, pairs: list[str], adapters: list[str], preflight_report: str) -> None:
    """Every check that a job of ``rules`` (the rules this run will run) needs; raises a
    ``UserError`` at the first failing one."""
    if "preflight" not in rules:  # it holds the run to the policy itself when it runs
        check_policy(config, preflight_report)
    if rules & QUERY_RULES and config["queries"]:
        read_queries(config["queries"])
    if "train_head" in rules:
        for path in pairs:
            parse_pairs(path)
    if rules & MODEL_RULES:
        for folder in adapters:
            check_adapter(folder)
    if rules & DATABASE_RULES:
        check_database(config)
