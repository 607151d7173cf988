"""`roo-bench report RESULTS... --out report.html`: one self-contained HTML efficiency report."""

from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser(
        "report",
        help="build a self-contained HTML report from result files",
        description="Build one self-contained HTML report (no network needed) from result files: "
        "JSONL result records and the --json outputs of storage/model/comm/calibrate/project. "
        "Directories are scanned recursively for *.jsonl and *.json.",
    )
    p.add_argument("results", nargs="+", metavar="RESULTS", help="result files or directories")
    p.add_argument("--out", required=True, help="the HTML file to write (atomically)")
    p.add_argument("--title", default="roo-bench efficiency report", help="report title")
    p.set_defaults(func=_run)


def _run(args) -> int:
    # Imported here so other subcommands do not pay for matplotlib/jinja2 at start-up.
    from reports.render import build_report

    out, rs = build_report(args.results, args.out, title=args.title)
    for w in rs.warnings:
        print(f"roo-bench report: warning: {w}", file=sys.stderr)
    print(out)
    return 0
