"""`roo-bench demo [--out DIR] [--device cpu|cuda]`: the whole pipeline, small, ending in a report.

What `make demo` runs. Each stage calls the real command in-process (`harness.cli.main([...])`), so
the demo exercises exactly what a user would type; a stage whose command is not installed is skipped
with an explicit line (and the report says so), never silently dropped. Committed GPU results under
reports/data/ are folded in, labelled by the report as committed results with their device name.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
import sys
import time
from pathlib import Path

from workloads.errors import UserError

MARKER = ".roo-bench-demo"  # marks a directory the demo made, so a re-run may clear its own subdirs
OWNED = ("results", "data", "sweep", "logs")
REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "reports" / "data"
COMMITTED_RECORD_FILES = ("results.jsonl", "comm.jsonl", "calibration.json", "nvml_perturbation.jsonl")
# A committed folder holding this file is kept for the record but not folded in: its measurements
# were taken on code since fixed (the file says why and where the rerun is).
SUPERSEDED_MARK = "SUPERSEDED.md"
SWEEP_FILE = REPO / "harness" / "sweeps" / "ci-tiny.toml"
STORAGE_PRESET = "early-ranking"
STORAGE_REQUESTS = 300  # a reduced early-ranking: ~3k impressions, ~120k history events; seconds on CPU


def committed_record_files(root: Path = COMMITTED) -> list[Path]:
    """The committed record files the demo folds in: every COMMITTED_RECORD_FILES file under root
    except those in a folder (or below one) that holds SUPERSEDED_MARK."""
    if not root.is_dir():
        return []
    stale = {p.parent for p in root.rglob(SUPERSEDED_MARK)}
    return sorted(
        p
        for p in root.rglob("*")
        if p.name in COMMITTED_RECORD_FILES and not any(d in stale for d in p.parents)
    )


def register(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="generate, storage, cost model, a small sweep and the HTML report",
        description="Run the whole pipeline at demo size (a few minutes on 2 CPU cores) and "
        "write DIR/report.html; committed GPU results under reports/data/ are folded in.",
    )
    p.add_argument("--out", default="demo-out", help="output directory (default demo-out)")
    p.add_argument(
        "--device", default="cpu", choices=("cpu", "cuda"), help="where the sweep runs (default cpu)"
    )
    p.add_argument(
        "--skip",
        action="append",
        default=[],
        metavar="STAGE",
        help="skip a stage (calibrate, generate, storage, model, sweep, comm); repeatable",
    )
    p.set_defaults(func=_run)


def _commands() -> set[str]:
    from harness.cli import build_parser

    with contextlib.redirect_stderr(io.StringIO()):  # import problems are reported by the stage lines
        parser = build_parser()
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            return set(a.choices)
    return set()


def _call(argv: list[str], capture: bool) -> tuple[int, str]:
    """Run `roo-bench argv` in-process; (exit code, captured stdout)."""
    from harness.cli import main

    buf = io.StringIO()
    ctx = contextlib.redirect_stdout(buf) if capture else contextlib.nullcontext()
    try:
        with ctx:
            rc = main(argv)
    except SystemExit as e:  # argparse usage errors exit; a changed CLI must not kill the demo
        rc = e.code if isinstance(e.code, int) else 2
    return int(rc or 0), buf.getvalue()


def _prepare(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {str(out)!r} is a file; give a directory")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).exists():
        raise UserError(
            f"--out {str(out)!r} exists and was not made by `roo-bench demo`; choose a new or empty directory"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / MARKER).write_text("made by roo-bench demo; its subdirectories are replaced on the next run\n")
    except OSError as e:
        raise UserError(
            f"--out {str(out)!r}: cannot create it ({e.strerror}); choose a writable directory"
        ) from None
    for d in OWNED:
        shutil.rmtree(out / d, ignore_errors=True)
        (out / d).mkdir()


def _run(args) -> int:
    out = Path(args.out)
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UserError(
                "--device cuda: no CUDA device is available (torch.cuda.is_available() is False); "
                "use --device cpu"
            )
    known = ("calibrate", "generate", "storage", "model", "sweep", "comm")
    bad = [s for s in args.skip if s not in known]
    if bad:
        raise UserError(f"--skip {bad[0]!r}: unknown stage; choose from {', '.join(known)}")
    _prepare(out)
    res, data, logs = out / "results", out / "data", out / "logs"
    dev = args.device
    have = _commands()
    stages: list[dict] = []

    def stage(
        name: str,
        command: str,
        argv: list[str],
        save: Path | None = None,
        why_not: str | None = None,
        annotate: dict | None = None,
    ) -> bool:
        t0 = time.perf_counter()
        rec = {"stage": name, "command": "roo-bench " + " ".join(argv)}
        if name in args.skip or command in args.skip:
            rec.update(status="skipped", reason="--skip on the command line")
        elif command not in have:
            rec.update(status="skipped", reason=f"`roo-bench {command}` is not available in this checkout")
        elif why_not:
            rec.update(status="skipped", reason=why_not)
        else:
            print(f"demo: {name}: roo-bench {' '.join(argv)}", flush=True)
            rc, stdout = _call(argv, capture=save is not None)
            if rc != 0:
                rec.update(status="failed", reason=f"exit code {rc} (its error is printed above)")
            elif save is not None:
                try:
                    obj = json.loads(stdout)
                except json.JSONDecodeError:
                    rec.update(status="failed", reason="--json output is not one JSON object")
                else:
                    if isinstance(obj, dict):
                        for k, v in (annotate or {}).items():
                            obj.setdefault(k, v)
                    save.write_text(json.dumps(obj, indent=1) + "\n")
                    rec.update(status="ok", reason=None)
            else:
                rec.update(status="ok", reason=None)
        rec["seconds"] = round(time.perf_counter() - t0, 2)
        if rec["status"] == "ok":
            print(f"demo: {name}: ok ({rec['seconds']:.1f} s)", flush=True)
        elif rec["status"] == "skipped":
            print(f"skipped: {name} not available ({rec['reason']})", flush=True)
        else:
            print(f"failed: {name} ({rec['reason']})", flush=True)
        stages.append(rec)
        return rec["status"] == "ok"

    stage("calibrate", "calibrate", ["calibrate", "--device", dev, "--json"], res / "calibration.json")
    ds = data / STORAGE_PRESET
    generated = stage(
        "generate",
        "generate",
        [
            "generate",
            "--preset",
            STORAGE_PRESET,
            "--requests",
            str(STORAGE_REQUESTS),
            "--seed",
            "1",
            "--out",
            str(ds),
        ],
    )
    stage(
        "storage",
        "storage",
        ["storage", "--data", str(ds), "--json"],
        res / f"storage-{STORAGE_PRESET}.json",
        why_not=None if generated else "needs the generate stage's dataset",
        annotate={"preset": STORAGE_PRESET},
    )
    for preset in (STORAGE_PRESET, "tiny"):
        stage(
            f"model ({preset})" if preset != STORAGE_PRESET else "model",
            "model",
            ["model", "--preset", preset, "--json"],
            res / f"model-{preset}.json",
            annotate={"preset": preset},
        )
    stage(
        "sweep",
        "sweep",
        ["sweep", str(SWEEP_FILE), "--out", str(out / "sweep"), "--device", dev, "--json"],
        logs / "sweep-summary.json",
        why_not=None if SWEEP_FILE.is_file() else f"{SWEEP_FILE} does not exist",
    )
    comm_why = None
    if dev == "cuda":
        import torch

        if torch.cuda.device_count() < 2:
            comm_why = "the NCCL all-to-all needs 2 GPUs; this machine has 1"
    stage(
        "comm",
        "comm",
        ["comm", "--nproc", "2", "--preset", "tiny", "--device", dev, "--json"],
        res / "comm-tiny-w2.json",
        why_not=comm_why,
        annotate={"preset": "tiny", "nproc": 2},
    )

    (res / "demo.json").write_text(
        json.dumps({"kind": "demo", "device": dev, "stages": stages}, indent=1) + "\n"
    )
    inputs = [str(res)]
    if (out / "sweep" / "results.jsonl").is_file():
        inputs.append(str(out / "sweep" / "results.jsonl"))
    # Only the record files: the committed folders also hold the kernel benchmark's tables, profiler
    # summaries, asv output and the `comm --json` summaries of the records in comm.jsonl (which
    # would count every comm run twice).
    committed = committed_record_files()
    if committed:
        inputs.extend(str(p) for p in committed)
        print(f"demo: folding in {len(committed)} committed result file(s) from {COMMITTED}", flush=True)
    else:
        print(f"demo: no committed GPU results under {COMMITTED}", flush=True)

    from reports.render import build_report

    report, rs = build_report(inputs, out / "report.html", title=f"roo-bench demo report ({dev})")
    for w in rs.warnings:
        print(f"demo: report warning: {w}", file=sys.stderr)
    failed = [s["stage"] for s in stages if s["status"] == "failed"]
    if failed:
        print(
            f"demo: {len(failed)} stage(s) failed: {', '.join(failed)} (see above; the report says so too)",
            file=sys.stderr,
        )
    print(report.resolve())
    return 1 if failed else 0
