"""The verify report in Markdown: the checks table, the details, the spot check."""

from __future__ import annotations

import math

from embedflow.verify.report import FAIL, PASS, WARN, Check, Report


def _fmt(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value == 0 or 1e-3 <= abs(value) < 1e6:
            text = f"{value:.6f}"
            # strip trailing zeros only where nothing was rounded away (0.99999994 shows 1.000000)
            exact = abs(float(text) - value) <= 1e-12 * max(1.0, abs(value))
            return text.rstrip("0").rstrip(".") if exact else text
        return f"{value:.3g}"
    if isinstance(value, dict):
        return ", ".join(f"{key} {_fmt(item)}" for key, item in value.items())
    return str(value)


def format_threshold(threshold) -> str:
    if not isinstance(threshold, dict):
        return _fmt(threshold)
    if "fail_below" in threshold:
        text = f"≥ {_fmt(threshold['fail_below'])}"
        if threshold["warn_below"] != threshold["fail_below"]:
            text += f" (warn < {_fmt(threshold['warn_below'])})"
        return text
    if "fail_above" in threshold:
        text = f"≤ {_fmt(threshold['fail_above'])}"
        if threshold["warn_above"] != threshold["fail_above"]:
            text += f" (warn > {_fmt(threshold['warn_above'])})"
        return text
    if "equals" in threshold:
        expected = threshold["equals"]
        if isinstance(expected, str) and len(expected) == 64:
            expected = expected[:12] + "…"
        return f"= {_fmt(expected)}"
    return _fmt(threshold)


def format_value(check: Check) -> str:
    value = check.value
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        value = value[:12] + "…"  # a sha256
    text = _fmt(value)
    return f"{text} {check.unit}" if check.unit else text


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


STATUS_MARK = {PASS: "pass", WARN: "**WARN**", FAIL: "**FAIL**"}


def checks_table(checks: list[Check]) -> str:
    lines = ["| check | status | value | threshold |", "|---|---|---|---|"]
    lines += [
        f"| {check.name} | {STATUS_MARK[check.status]} | {_cell(format_value(check))} "
        f"| {_cell(format_threshold(check.threshold))} |"
        for check in checks
    ]
    return "\n".join(lines)


def render_markdown(report: Report) -> str:
    summary = report.summary
    out = [
        f"# Verify: {report.model} / {report.precision}: {report.status.upper()}",
        "",
        f"`{report.file}`: {summary.get('rows', '?')} rows x {summary.get('dim', '?')} dims, "
        f"{report.precision}; {len(report.failing())} failing, "
        f"{sum(c.status == WARN for c in report.checks)} warning, "
        f"{sum(c.status == PASS for c in report.checks)} passing checks; "
        f"verified in {summary.get('seconds', '?')} s."
        + (f" {summary['chunks_rejected']} chunk(s) of the chunks file were rejected (on_bad_chunk: skip) "
           "and are not in it." if summary.get("chunks_rejected") else ""),
        "",
        "## Checks",
        "",
        checks_table(report.checks),
        "",
        "### Details",
        "",
    ]
    out += [f"- **{check.name}** ({check.status}): {check.detail}" for check in report.checks if check.detail]
    if report.not_run:
        out += ["", "Not run:", ""]
        out += [f"- {item['name']}: {item['reason']}" for item in report.not_run]
    spot = report.spot_check
    if spot:
        prompt = spot.get("query_prompt")
        out += [
            "",
            "## Spot check",
            "",
            f"Probe queries encoded with the model's query prompt ({'none' if not prompt else repr(prompt)}); "
            f"score: {spot['scoring']}.",
        ]
        if spot.get("agreement_with_float32") is not None:
            out.append(f"Agreement of these top-{spot['k']} lists with the float32 file's: "
                       f"{_fmt(spot['agreement_with_float32'])}.")
        retrieval = spot.get("self_retrieval", {})
        if retrieval.get("rate") is not None:
            out.append(f"Self-retrieval on {retrieval['sample_rows']} sampled rows: {retrieval['rate']:.1%}.")
        for entry in spot["queries"]:
            with_reference = any("in_float32_top" in hit for hit in entry["hits"])
            out += ["", f"### “{_cell(entry['query'])}”", ""]
            header = "| rank | id | score | first words |" + (" in float32 top |" if with_reference else "")
            out += [header, "|---|---|---|---|" + ("---|" if with_reference else "")]
            for hit in entry["hits"]:
                row = f"| {hit['rank']} | `{_cell(hit['id'])}` | {hit['score']:.3f} | {_cell(hit['first_words'])} |"
                if with_reference:
                    row += f" {'yes' if hit.get('in_float32_top') else 'no'} |"
                out.append(row)
    return "\n".join(out) + "\n"
