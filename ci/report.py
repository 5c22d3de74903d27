"""Outputs of ``bench ci check``: a readable table, JUnit XML (CI systems) and markdown (PR comments).

JUnit: one ``<testsuite name="augbench ci check">`` with one ``<testcase classname="augbench.<recipe>"
name="<task>:<metric>">`` per finding; failing findings carry ``<failure type="<status>" message=...>``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from tabulate import tabulate

from ci.check import Finding
from core.results import atomic_write_text

HEADERS = ["status", "recipe", "task", "metric", "current (n)", "reference", "Δ", "tolerance", "mode", "note"]


def _num(x: float | None, nd: int = 3) -> str:
    return "—" if x is None else f"{x:.{nd}f}"


def rows(findings: list[Finding]) -> list[list[str]]:
    out = []
    for f in sorted(findings, key=lambda f: (not f.failed, f.recipe, f.task, f.metric)):
        cur = "—" if f.current is None else f"{f.current:.3f} ({f.current_n})"
        if f.baseline is None:
            base = "—"
        elif f.mode == "paired":
            base = f"{f.baseline:.3f} (stored, seeds {', '.join(map(str, f.seeds))})"
        else:
            base = f"{f.baseline:.3f} ± {f.baseline_std or 0:.3f} (n={f.baseline_n})"
        delta = "—" if f.delta is None else f"{f.delta:+.3f}"
        status = f.status.upper() if f.failed else f.status
        out.append(
            [status, f.recipe, f.task, f.metric, cur, base, delta, _num(f.tolerance), f.mode, f.message]
        )
    return out


def summary(findings: list[Finding]) -> str:
    failed = sum(f.failed for f in findings)
    verdict = "FAILED" if failed else "PASSED"
    return f"{verdict}: {len(findings) - failed} ok, {failed} failed"


def format_table(findings: list[Finding]) -> str:
    return tabulate(rows(findings), headers=HEADERS, disable_numparse=True) + "\n" + summary(findings)


def markdown(findings: list[Finding], baseline: Path, runs: Path) -> str:
    table = tabulate(rows(findings), headers=HEADERS, tablefmt="github", disable_numparse=True)
    return (
        f"## augbench CI check: {summary(findings)}\n\n"
        f"_Results under `{runs}` vs baseline `{baseline}`. Tolerance = max(floor, k · std · √(1/m + 1/n)) "
        f"(rule: `docs/leaderboard.md`)._\n\n{table}\n"
    )


def junit(findings: list[Finding], baseline: Path, runs: Path) -> str:
    failed = sum(f.failed for f in findings)
    suites = ET.Element("testsuites", name="augbench", tests=str(len(findings)), failures=str(failed))
    suite = ET.SubElement(
        suites,
        "testsuite",
        name="augbench ci check",
        tests=str(len(findings)),
        failures=str(failed),
        errors="0",
        skipped="0",
    )
    props = ET.SubElement(suite, "properties")
    ET.SubElement(props, "property", name="baseline", value=str(baseline))
    ET.SubElement(props, "property", name="runs", value=str(runs))
    for f, row in zip(
        sorted(findings, key=lambda f: (not f.failed, f.recipe, f.task, f.metric)),
        rows(findings),
        strict=True,
    ):
        case = ET.SubElement(
            suite, "testcase", classname=f"augbench.{f.recipe}", name=f"{f.task}:{f.metric}", time="0"
        )
        text = "; ".join(f"{h}: {v}" for h, v in zip(HEADERS, row, strict=True) if v)
        if f.failed:
            failure = ET.SubElement(
                case, "failure", type=f.status, message=f"{f.status}: {f.message or text}"
            )
            failure.text = text
        else:
            ET.SubElement(case, "system-out").text = text
    ET.indent(suites)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def write(path: Path, text: str) -> Path:
    atomic_write_text(path, text)
    return path
