"""What every rule script shares: logging into the rule's log, clean failures.

A job's log lines go to its log file and to stderr, which Snakemake shows on
the console. A failure ends with one line there: a ``UserError`` (bad input,
bad config, no GPU) with its message, anything else as ``rule X failed:
<type>: <message> (traceback in <log>)``. The traceback goes to the log file
only: the console never shows one (the default profile leaves Snakemake's
``show-failed-logs`` off for that reason). Log records pass through
``provenance.redact`` so that a connection string never leaves a password in
a log.
"""

from __future__ import annotations

import contextlib
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
        if record.exc_info and not record.exc_text:  # the traceback, formatted once, redacted too
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return True


class WithoutTraceback(logging.Formatter):
    """The console's format: the message, never the traceback that the log file holds."""

    def format(self, record: logging.LogRecord) -> str:
        kept = record.exc_info, record.exc_text, record.stack_info
        record.exc_info = record.exc_text = record.stack_info = None
        try:
            return super().format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = kept


def setup_logging(log_path: str | None) -> None:
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(WithoutTraceback(FORMAT))
    handlers: list[logging.Handler] = [console]
    if log_path:
        handlers.append(logging.FileHandler(log_path, mode="w", encoding="utf-8"))
        handlers[-1].setFormatter(logging.Formatter(FORMAT))
    for handler in handlers:
        handler.addFilter(RedactingFilter())
    logging.basicConfig(level=logging.INFO, handlers=handlers, force=True)
    logging.captureWarnings(True)


# Params a job's helper set for its main (device_slots.run_model_rule: the GPU slot's device).
_overrides: dict[str, object] = {}


@contextlib.contextmanager
def overridden_param(name: str, value):
    """Within the block, ``params_json(snakemake, name)`` gives ``value``."""
    _overrides[name] = value
    try:
        yield
    finally:
        del _overrides[name]


def params_json(snakemake, name: str):
    """A canonical-JSON param (see ``embedflow.config``) as Python values."""
    if name in _overrides:
        return json.loads(json.dumps(_overrides[name]))
    return json.loads(getattr(snakemake.params, name))


def run_rule(snakemake, main: Callable[[object], None]) -> None:
    setup_logging(snakemake.log[0] if snakemake.log else None)
    try:
        main(snakemake)
    except UserError as error:
        log.error("%s", error)
        sys.exit(1)
    except Exception as error:
        lines = str(error).strip().splitlines() or [""]
        where = f" (traceback in {snakemake.log[0]})" if snakemake.log else ""
        log.error("rule %s failed: %s: %s%s%s", snakemake.rule, type(error).__name__, lines[0],
                  " …" if len(lines) > 1 else "", where, exc_info=True)
        sys.exit(1)

