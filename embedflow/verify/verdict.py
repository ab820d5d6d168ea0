"""Rule ``verify``: judge the measurements against the configured thresholds.

Writes the report as JSON and Markdown when nothing fails; when a check fails
it logs the failing checks and the whole report and fails the job, so no
report exists and nothing downstream of that model x precision runs.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from embedflow.errors import UserError
from embedflow.provenance import Timer, write_provenance
from embedflow.snakemake_rule import params_json, run_rule
from embedflow.verify.markdown import checks_table, format_threshold, format_value
from embedflow.verify.report import FAIL, PASS, WARN, Report, judge

log = logging.getLogger(__name__)


def _main(snakemake) -> None:
    """Judge the measurements; write the report, or fail with the findings."""
    timer = Timer()
    thresholds = params_json(snakemake, "thresholds")
    record = json.loads(Path(snakemake.input.measures).read_text())
    report = judge(Report.from_measurements(record), thresholds)
    timer.stop()
    label = f"{report.model} / {report.precision}"
    for check in report.checks:
        level = {PASS: logging.INFO, WARN: logging.WARNING, FAIL: logging.ERROR}[check.status]
        log.log(level, "%-18s %-4s %s (threshold %s)", check.name, check.status, format_value(check),
                format_threshold(check.threshold))
    failing = report.failing()
    if failing:
        log.error("verify %s FAILED; the failing checks:\n%s\n\n%s", label, checks_table(failing),
                  "\n".join(f"- {check.name}: {check.detail}" for check in failing))
        with open(snakemake.log[0], "a", encoding="utf-8") as handle:  # the log only, not the terminal
            handle.write("\nThe whole report (no report file is written, so nothing downstream runs):\n\n")
            handle.write(report.to_markdown())
        raise UserError(
            f"verify {label}: {len(failing)} check(s) failed: {', '.join(c.name for c in failing)}; "
            f"findings in {snakemake.log[0]}"
        )
    Path(snakemake.output.report).write_text(json.dumps(report.to_json(), indent=2) + "\n")
    Path(snakemake.output.markdown).write_text(report.to_markdown())
    extra = {"verify": {"status": report.status, "checks": {c.name: c.status for c in report.checks}}}
    for output in (snakemake.output.report, snakemake.output.markdown):
        write_provenance(output, rule=snakemake.rule, wildcards=dict(snakemake.wildcards),
                         config={"thresholds": thresholds}, inputs=[snakemake.input.measures],
                         timing=timer.record(), extra=extra)
    log.info("verify %s: %s (%s)", label, report.status, snakemake.output.report)


def run(snakemake) -> None:
    """Rule ``verify``."""
    run_rule(snakemake, _main)
