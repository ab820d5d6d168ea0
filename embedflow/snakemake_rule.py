"""What every rule script shares: logging into the rule's log, clean failures.

A ``UserError`` (bad input, bad config, no GPU) ends the job with its
message and no traceback; anything else is logged with its traceback and
re-raised. Log records pass through ``provenance.redact`` so that a
connection string never leaves a password in a log.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable

from embedflow.errors import UserError
from embedflow.provenance import redact

log = logging.getLogger("embedflow")
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        return True


def setup_logging(log_path: str | None) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        handlers.append(logging.FileHandler(log_path, mode="w", encoding="utf-8"))
    for handler in handlers:
        handler.addFilter(RedactingFilter())
        handler.setFormatter(logging.Formatter(FORMAT))
    logging.basicConfig(level=logging.INFO, handlers=handlers, force=True)
    logging.captureWarnings(True)


def params_json(snakemake, name: str):
    """A canonical-JSON param (see ``embedflow.config``) as Python values."""
    return json.loads(getattr(snakemake.params, name))


def run_rule(snakemake, main: Callable[[object], None]) -> None:
    setup_logging(snakemake.log[0] if snakemake.log else None)
    try:
        main(snakemake)
    except UserError as error:
        log.error("%s", error)
        sys.exit(1)
    except Exception:
        log.exception("rule %s failed", snakemake.rule)
        raise
