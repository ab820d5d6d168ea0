"""What a run's environment must give, checked when the run starts (the Snakefile's ``onstart``).

When the run has a job that reaches the database (load, index, evaluate), the
server must be there before the first job starts, so that a wrong DSN is not
found after hours of embedding: ``database.dsn_env`` names a variable that is
set, the server answers, and its pgvector is at least 0.7 (with the embedded
server: it starts). This is checked at every run that has such jobs, and not
cached in a job's output: a server's state is today's, not the day the job ran.
Snakemake calls ``onstart`` only for a real run, never for ``snakemake -n``,
which stays free of network calls. The inputs are checked by rule preflight.
"""

from __future__ import annotations

import logging

from embedflow.database import DatabaseSettings, connect, describe_target, server_versions

log = logging.getLogger(__name__)

DATABASE_RULES = frozenset({"load", "index", "evaluate"})


def check_database(config: dict, rules: set[str]) -> dict | None:
    """Reach the database when one of ``rules`` (the rules this run will run) needs it.
    Returns the server's versions, None when no rule does; raises a ``UserError``."""
    if not rules & DATABASE_RULES:
        return None
    settings = DatabaseSettings(pgdata=config["database"]["pgdata"], dsn_env=config["database"]["dsn_env"])
    with connect(settings) as connection:  # the DSN variable, the server, pgvector >= 0.7
        versions = server_versions(connection)
    log.info("database %s: PostgreSQL %s, pgvector %s", describe_target(settings), versions["postgresql"],
             versions["pgvector"])
    return versions
