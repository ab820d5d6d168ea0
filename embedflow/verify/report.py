"""The check model: a measured value and how to judge it; the settings; the report.

``measure`` builds checks with ``at_least`` / ``at_most`` (against thresholds
named by a path such as ``drift.mean_cosine``) or ``equals`` / ``none_of``
(against an expected value); ``judge`` gives each its status (``pass`` |
``warn`` | ``fail``) and the threshold it was held to.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from embedflow.errors import ConfigError

PASS, WARN, FAIL = "pass", "warn", "fail"
STATUS_ORDER = {PASS: 0, WARN: 1, FAIL: 2}


@dataclass
class Check:
    name: str
    value: object
    detail: str = ""
    unit: str = ""  # of a count, for people: "rows", "mismatches"
    judge: dict = field(default_factory=dict)  # how: equals an expected value, or at least / at most a threshold
    status: str | None = None  # set by ``judge``
    threshold: object = None  # set by ``judge``


def at_least(name: str, value: float, levels: str, detail: str = "") -> Check:
    """pass at or above the ``warn`` level of thresholds[levels]; warn below it; fail below ``fail``."""
    return Check(name, value, detail, judge={"kind": "at_least", "levels": levels})


def at_most(name: str, value: float, levels: str, detail: str = "") -> Check:
    return Check(name, value, detail, judge={"kind": "at_most", "levels": levels})


def equals(name: str, value, expected, detail: str = "", unit: str = "") -> Check:
    return Check(name, value, detail, unit, judge={"kind": "equals", "expected": expected})


def none_of(name: str, count: int, detail: str = "", unit: str = "rows") -> Check:
    """A count of bad things that must be zero."""
    return equals(name, count, 0, detail, unit)


def worst(statuses) -> str:
    return max((s for s in statuses if s), key=STATUS_ORDER.__getitem__, default=PASS)


def _levels(thresholds: dict, path: str) -> dict:
    value = thresholds
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            raise ConfigError(f"verify: no threshold {path!r} configured")
        value = value[key]
    return value if isinstance(value, dict) else {"warn": value, "fail": value}


def judge(report: Report, thresholds: dict) -> Report:
    """Give every check its status and threshold; a value that is not a finite number fails."""
    for check in report.checks:
        rule = check.judge
        if rule["kind"] == "equals":
            check.threshold = {"equals": rule["expected"]}
            check.status = PASS if check.value == rule["expected"] else FAIL
            continue
        levels = _levels(thresholds, rule["levels"])
        value = check.value
        number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if rule["kind"] == "at_least":
            check.threshold = {"fail_below": levels["fail"], "warn_below": levels["warn"]}
            check.status = FAIL if not number or value < levels["fail"] else WARN if value < levels["warn"] else PASS
        else:
            check.threshold = {"fail_above": levels["fail"], "warn_above": levels["warn"]}
            check.status = FAIL if not number or value > levels["fail"] else WARN if value > levels["warn"] else PASS
    return report


@dataclass(frozen=True)
class VerifySettings:
    model_key: str
    precision: str
    model: dict  # the model's output slice: source, adapter, truncate_dim, normalize, ...
    selection: dict  # text_field, and max_chunks / sample / seed in test mode
    checks: dict  # sample_rows, seed, spot_check_k; and thresholds (the slice for this precision) to judge
    batch_rows: int = 8192  # speed and memory only


@dataclass
class Report:
    model: str
    precision: str
    file: str
    checks: list[Check] = field(default_factory=list)
    not_run: list[dict] = field(default_factory=list)
    spot_check: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)

    @property
    def status(self) -> str:
        return worst(check.status for check in self.checks)

    def check(self, name: str) -> Check | None:
        return next((check for check in self.checks if check.name == name), None)

    def failing(self) -> list[Check]:
        return [check for check in self.checks if check.status == FAIL]

    def to_json(self) -> dict:
        """The report: every check with its status and threshold."""
        checks = [{k: v for k, v in asdict(check).items() if k != "judge"} for check in self.checks]
        return _jsonable(
            {
                "model": self.model,
                "precision": self.precision,
                "file": self.file,
                "status": self.status,
                "checks": checks,
                "not_run": self.not_run,
                "spot_check": self.spot_check,
                "summary": self.summary,
            }
        )

    def to_measurements(self) -> dict:
        """What ``measure`` keeps: values and how to judge them, no statuses (full float precision)."""
        checks = [{k: v for k, v in asdict(check).items() if k not in ("status", "threshold")} for check in self.checks]
        return _jsonable(
            {
                "model": self.model,
                "precision": self.precision,
                "file": self.file,
                "checks": checks,
                "not_run": self.not_run,
                "spot_check": self.spot_check,
                "summary": self.summary,
            },
            digits=None,
        )

    @classmethod
    def from_measurements(cls, record: dict) -> Report:
        return cls(
            model=record["model"],
            precision=record["precision"],
            file=record["file"],
            checks=[Check(**check) for check in record["checks"]],
            not_run=record["not_run"],
            spot_check=record["spot_check"],
            summary=record["summary"],
        )

    def to_markdown(self) -> str:
        from embedflow.verify.markdown import render_markdown  # which imports this module

        return render_markdown(self)


def _jsonable(value, digits: int | None = 6):
    if isinstance(value, dict):
        return {str(key): _jsonable(item, digits) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item, digits) for item in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if not math.isfinite(value):
            return str(value)
        return value if digits is None else round(value, digits)
    return value
