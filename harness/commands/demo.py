"""`roo-bench demo [--out DIR] [--device cpu|cuda]`: the whole pipeline, small, ending in a report.

What `make demo` runs. Each stage calls the library function its command wraps (the dataset
generator, the storage measurement, the cost model, the sweep runner, the comm launcher, the
calibration) and writes that command's `--json` record itself (workloads.records), under the file
name it always had. A stage whose library is not importable in this checkout is skipped with an
explicit line (and the report says so), never silently dropped; a stage that fails prints its error
and the demo goes on. Committed GPU results under reports/data/ are folded in, labelled by the
report as committed results with their device name.

Layout of DIR: results/ (the records the report reads: calibration, storage, model, comm, demo),
data/ (the generated dataset), sweep/ (the sweep's results.jsonl), logs/ (the sweep's counts),
report.html.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
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
STORAGE_SEED = 1
MODEL_PRESETS = (STORAGE_PRESET, "tiny")
MODEL_DEVICE, MODEL_DTYPE = "h100", "bf16"  # the `model` command's defaults
COMM_NPROC, COMM_PRESET, COMM_SHARDING, COMM_TIMEOUT_S = 2, "tiny", "table", 900.0
STAGES = ("calibrate", "generate", "storage", "model", "sweep", "validate-time", "comm", "comm-project")


def committed_record_files(root: Path = COMMITTED) -> list[Path]:
    """The committed record files the demo folds in: every COMMITTED_RECORD_FILES file under root
    except those in a folder (or below one) that holds SUPERSEDED_MARK."""
    if not root.is_dir():
        return []
    stale = {p.parent for p in root.rglob(SUPERSEDED_MARK)}
    return sorted(
        p for p in root.rglob("*") if p.name in COMMITTED_RECORD_FILES and not any(d in stale for d in p.parents)
    )


def register(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="generate, storage, cost model, a small sweep and the HTML report",
        description="Run the whole pipeline at demo size (a few minutes on 2 CPU cores) and "
        "write DIR/report.html; committed GPU results under reports/data/ are folded in.",
    )
    p.add_argument("--out", default="demo-out", help="output directory (default demo-out)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where the sweep runs (default cpu)")
    p.add_argument(
        "--skip",
        action="append",
        default=[],
        metavar="STAGE",
        help="skip a stage (calibrate, generate, storage, model, sweep, comm); repeatable",
    )
    p.set_defaults(func=_run)


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
        raise UserError(f"--out {str(out)!r}: cannot create it ({e.strerror}); choose a writable directory") from None
    for d in OWNED:
        shutil.rmtree(out / d, ignore_errors=True)
        (out / d).mkdir()


# --- running stages -----------------------------------------------------------------------------------
@dataclass
class Demo:
    """One demo run: where it writes, what it skips, and one outcome line per stage (demo.json)."""

    out: Path
    device: str
    skip: frozenset[str]
    stages: list[dict] = field(default_factory=list)

    @property
    def results(self) -> Path:
        return self.out / "results"

    @property
    def dataset(self) -> Path:
        return self.out / "data" / STORAGE_PRESET

    def stage(self, name: str, command: str, argv: list[str], work: Callable[[], None], why_not=None) -> bool:
        """Run one stage: `work` calls the library and writes the stage's record. `argv` is the
        equivalent command line, recorded so a user can rerun the stage by hand."""
        t0 = time.perf_counter()
        line = {"stage": name, "command": "roo-bench " + " ".join(argv)}
        if name in self.skip or command in self.skip:
            line.update(status="skipped", reason="--skip on the command line")
        elif why_not:
            line.update(status="skipped", reason=why_not)
        else:
            print(f"demo: {name}: roo-bench {' '.join(argv)}", flush=True)
            line.update(_attempt(command, work))
        line["seconds"] = round(time.perf_counter() - t0, 2)
        if line["status"] == "ok":
            print(f"demo: {name}: ok ({line['seconds']:.1f} s)", flush=True)
        elif line["status"] == "skipped":
            print(f"skipped: {name} not available ({line['reason']})", flush=True)
        else:
            print(f"failed: {name} ({line['reason']})", flush=True)
        self.stages.append(line)
        return line["status"] == "ok"


def _attempt(command: str, work: Callable[[], None]) -> dict:
    """Status and reason of one stage's work; its error is printed as the command would print it."""
    try:
        work()
    except ModuleNotFoundError as e:  # a checkout without this stage's library
        return {"status": "skipped", "reason": f"`roo-bench {command}` is not available in this checkout ({e.name})"}
    except UserError as e:
        print(f"roo-bench {command}: error: {e}", file=sys.stderr, flush=True)
        return {"status": "failed", "reason": str(e)}
    except Exception as e:  # one failed stage must not stop the demo
        print(f"roo-bench {command}: error: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        return {"status": "failed", "reason": f"{type(e).__name__}: {e}"}
    return {"status": "ok", "reason": None}


def _save(path: Path, kind, flat: dict, annotate: dict | None = None, device: str = "cpu") -> None:
    """Write a command's flat `--json` object as a record of `kind` (keys in `annotate` that the
    object lacks are added first: what the demo knows about the run that the output does not say),
    with the provenance of this run on `device`, as the command's `--json` carries it."""
    from harness.provenance import collect
    from harness.results import write_record
    from workloads.records import record_from_flat

    obj = dict(flat)
    for k, v in (annotate or {}).items():
        obj.setdefault(k, v)
    write_record(path, record_from_flat(kind, obj, provenance=collect(None, device)))


# --- the stages -----------------------------------------------------------------------------------------
def _calibrate(d: Demo) -> None:
    from harness.devices import calibrate
    from workloads.records import Kind

    # the kernel classes on the CPU take seconds; a GPU's take a minute, which the demo leaves to
    # `roo-bench calibrate --device cuda`
    res = calibrate(d.device, kernels=d.device == "cpu")
    _save(d.results / "calibration.json", Kind.CALIBRATION, res, device=d.device)


def _validate_time(d: Demo) -> None:
    """The step-time model's predictions vs the sweep's measured steps, with this run's calibration
    (kept under logs/: the report's validate records are the FLOP validation's)."""
    from harness.commands.validate_time import print_report, validate_time
    from workloads.records import Kind

    res = validate_time([str(d.out / "sweep" / "results.jsonl")], str(d.results / "calibration.json"), 0.0)
    print_report(res["points"], res["summary"], res["worst"], res["model"])
    _save(d.out / "logs" / "validate-time.json", Kind.VALIDATE, {"time_model": res})


def _generate(d: Demo) -> None:
    from harness.commands.workloads import generate_dataset
    from workloads.presets import resolve_spec

    spec = resolve_spec(STORAGE_PRESET, None, [])
    generate_dataset(spec, STORAGE_REQUESTS, STORAGE_SEED, d.dataset)


def _storage(d: Demo) -> None:
    from harness.commands.workloads import measure_dataset
    from workloads.parquet_io import CODECS
    from workloads.records import Kind

    res = measure_dataset(d.dataset, tuple(CODECS))
    _save(d.results / f"storage-{STORAGE_PRESET}.json", Kind.STORAGE, res, {"preset": STORAGE_PRESET})


def _model(d: Demo, preset: str) -> None:
    from roo_ref import cost
    from roo_ref.cost import model_report
    from roo_ref.hardware import get_device
    from roo_ref.models import model_config_for
    from workloads.presets import resolve_spec
    from workloads.records import Kind

    spec = resolve_spec(preset, None, [])
    cfg = model_config_for(spec, None, [])
    cost.check_priceable(spec, cfg)
    rep = model_report(spec, cfg, get_device(MODEL_DEVICE), MODEL_DTYPE, device_key=MODEL_DEVICE)
    _save(d.results / f"model-{preset}.json", Kind.MODEL, rep, {"preset": preset})


def _sweep(d: Demo) -> None:
    from harness.sweep import run_sweep
    from workloads.records import Kind

    res = run_sweep(SWEEP_FILE, d.out / "sweep", resume=False, device=d.device, quiet=False)
    _save(d.out / "logs" / "sweep-summary.json", Kind.SWEEP, res)


def _comm(d: Demo) -> None:
    import argparse

    from harness.commands.comm import add_arguments, run_comm, summary
    from workloads.records import Kind

    p = argparse.ArgumentParser()
    add_arguments(p)  # the comm command's own defaults for everything the demo does not set
    args = p.parse_args(["--preset", COMM_PRESET, "--device", d.device])
    args.nproc, args.sharding, args.timeout, args.out = COMM_NPROC, COMM_SHARDING, COMM_TIMEOUT_S, None
    s = summary(run_comm(args)[0], None)
    name = f"comm-{COMM_PRESET}-w{COMM_NPROC}.json"
    _save(d.results / name, Kind.COMM, s, {"preset": COMM_PRESET, "nproc": COMM_NPROC}, device=d.device)


def _comm_project(d: Demo) -> None:
    """The alpha-beta projection of the comm stage's exchange to W = 2..1024 (analytic, instant)."""
    import argparse

    from harness.commands.comm_project import add_arguments, build
    from workloads.records import Kind

    p = argparse.ArgumentParser()
    add_arguments(p)
    obj = build(p.parse_args(["--preset", COMM_PRESET, "--sharding", COMM_SHARDING]))
    _save(d.results / f"comm-project-{COMM_PRESET}.json", Kind.COMM, obj, {"preset": COMM_PRESET}, device=d.device)


def _comm_why_not(device: str) -> str | None:
    if device == "cuda":
        import torch

        if torch.cuda.device_count() < 2:
            return "the NCCL all-to-all needs 2 GPUs; this machine has 1"
    return None


def _run_stages(d: Demo) -> None:
    dev = d.device
    d.stage("calibrate", "calibrate", ["calibrate", "--device", dev, "--json"], lambda: _calibrate(d))
    gen_argv = ["generate", "--preset", STORAGE_PRESET, "--requests", str(STORAGE_REQUESTS)]
    gen_argv += ["--seed", str(STORAGE_SEED), "--out", str(d.dataset)]
    generated = d.stage("generate", "generate", gen_argv, lambda: _generate(d))
    d.stage(
        "storage",
        "storage",
        ["storage", "--data", str(d.dataset), "--json"],
        lambda: _storage(d),
        why_not=None if generated else "needs the generate stage's dataset",
    )
    for preset in MODEL_PRESETS:
        name = f"model ({preset})" if preset != STORAGE_PRESET else "model"
        d.stage(name, "model", ["model", "--preset", preset, "--json"], lambda p=preset: _model(d, p))
    d.stage(
        "sweep",
        "sweep",
        ["sweep", str(SWEEP_FILE), "--out", str(d.out / "sweep"), "--device", dev, "--json"],
        lambda: _sweep(d),
        why_not=None if SWEEP_FILE.is_file() else f"{SWEEP_FILE} does not exist",
    )
    swept = (d.out / "sweep" / "results.jsonl").is_file() and (d.results / "calibration.json").is_file()
    d.stage(
        "validate-time",
        "validate-time",
        ["validate-time", str(d.out / "sweep" / "results.jsonl"), "--calibration", str(d.results / "calibration.json")],
        lambda: _validate_time(d),
        why_not=None if swept else "needs the calibrate and sweep stages' records",
    )
    comm_argv = ["comm", "--nproc", str(COMM_NPROC), "--preset", COMM_PRESET, "--device", dev, "--json"]
    d.stage("comm", "comm", comm_argv, lambda: _comm(d), why_not=_comm_why_not(dev))
    proj_argv = ["comm-project", "--preset", COMM_PRESET, "--sharding", COMM_SHARDING, "--json"]
    d.stage("comm-project", "comm-project", proj_argv, lambda: _comm_project(d))


# --- the report -------------------------------------------------------------------------------------------
def _report_inputs(d: Demo) -> list[str]:
    inputs = [str(d.results)]
    if (d.out / "sweep" / "results.jsonl").is_file():
        inputs.append(str(d.out / "sweep" / "results.jsonl"))
    # Only the record files: the committed folders also hold the kernel benchmark's tables, profiler
    # summaries, asv output and the `comm --json` summaries of the records in comm.jsonl (which
    # would count every comm run twice).
    committed = committed_record_files()
    if committed:
        inputs.extend(str(p) for p in committed)
        print(f"demo: folding in {len(committed)} committed result file(s) from {COMMITTED}", flush=True)
    else:
        print(f"demo: no committed GPU results under {COMMITTED}", flush=True)
    return inputs


def _check_args(args) -> None:
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UserError(
                "--device cuda: no CUDA device is available (torch.cuda.is_available() is False); use --device cpu"
            )
    bad = [s for s in args.skip if s not in STAGES]
    if bad:
        raise UserError(f"--skip {bad[0]!r}: unknown stage; choose from {', '.join(STAGES)}")


def _run(args) -> int:
    from harness.results import write_record
    from reports.render import build_report
    from workloads.records import Kind, make_record

    _check_args(args)
    out = Path(args.out)
    _prepare(out)
    d = Demo(out, args.device, frozenset(args.skip))
    _run_stages(d)
    write_record(d.results / "demo.json", make_record(Kind.DEMO, {"device": d.device}, {"stages": d.stages}))
    inputs = _report_inputs(d)
    report, rs = build_report(inputs, out / "report.html", title=f"roo-bench demo report ({d.device})")
    for w in rs.warnings:
        print(f"demo: report warning: {w}", file=sys.stderr)
    failed = [s["stage"] for s in d.stages if s["status"] == "failed"]
    if failed:
        print(
            f"demo: {len(failed)} stage(s) failed: {', '.join(failed)} (see above; the report says so too)",
            file=sys.stderr,
        )
    print(report.resolve())
    return 1 if failed else 0
