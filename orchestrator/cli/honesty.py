"""The warnings of a job's report.json as the `headforge` commands print them: every warning, then, when the
report says the output is not a result (a test prior or random weights served the job; runtime/report.py),
one line that cannot be missed."""

from __future__ import annotations

from typing import Callable

NOT_A_RESULT_BANNER = ("NOT A RESULT: a model that served this job is a test prior or has random weights "
                       "(see the warnings above); the output only shows that the pipeline runs")


def report_lines(report: dict) -> list[str]:
    """The lines to print for a parsed report.json: "warning: ..." per warning, then the banner when
    report["result_is_real"] is false. A report without the key (older writers) adds no banner."""
    lines = [f"warning: {w}" for w in report.get("warnings", [])]
    if report.get("result_is_real") is False:
        lines.append(NOT_A_RESULT_BANNER)
    return lines


def print_report_warnings(report: dict, out: Callable[[str], None] = print) -> None:
    """report_lines(report), each through `out` (print, or a rich console's print)."""
    for line in report_lines(report):
        out(line)
