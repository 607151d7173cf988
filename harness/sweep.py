"""Sweeps: a TOML grid of points, each run in its own subprocess, appended to DIR/results.jsonl.

Sweep file format (every table but [grid] is optional):

    [sweep]
    name = "hstu-k-by-L"
    point = "harness.run_point:run_point"   # the point function (module:function), this default
    timeout_s = 900                           # per point; a point past it is killed, recorded error

    [base]                                    # every point's config (harness.run_point.PointConfig)
    preset = "hstu-ranking"
    device = "cuda"
    dtype = "bf16"
    warmup = 5
    steps = 30
    [base.spec]                               # spec overrides for every point (dotted paths)
    impressions.kind = "fixed"
    history.length.kind = "fixed"
    [base.model]                              # model overrides for every point
    num_layers = 2

A workload spec file (e.g. one `roo-bench fit` wrote) replaces the preset: `spec = "fitted.toml"`
(a path relative to the sweep file) in [base], or an axis `spec = ["a.toml", "b.toml"]` in [grid];
the model family is then `model = "NAME"` (a model preset: tiny, retrieval, early-ranking,
late-ranking, hstu-ranking), needed unless the spec is named like one; spec overrides go in
`spec_overrides = ["impressions.value=4"]` (the [base.spec] table's name is taken). A point's
identity (its hash) is the spec's content, not the file's name.

    [grid]                                    # the cartesian product of these axes, in file order
    dtype = ["fp32", "bf16"]                  # a top-level config key
    [grid.spec]
    impressions.value = [1, 2, 4, 8]          # axis "spec.impressions.value"
    [grid.model]
    num_heads = [2, 4]                        # axis "model.num_heads"

An axis whose values are tables moves several settings together (one axis, zipped values):

    [grid]
    shape = [ { requests_per_batch = 64, "spec.history.length.value" = 256 },
              { requests_per_batch = 16, "spec.history.length.value" = 1024 } ]

Points are identified by PointConfig.config_hash (the input config; the axis labels are not part
of it). `--resume` skips every point whose hash already has a complete record (ok, oom or
error), so a point is never lost (a point in flight when the sweep was killed has no record and
runs again) and never duplicated (records are appended only by this process, one line each, after
the point's child has exited).

One writer per output directory: a sweep holds an exclusive lock (flock) on DIR/.lock from before
it reads DIR until it has written its last record; a second sweep on DIR (e.g. a `--resume` while
the first still runs) exits 2 naming the holder's pid. The kernel drops the lock with the holder's
process, so a killed sweep never leaves DIR locked.

Each point's child works in its own temp directory (job, record, log), named after DIR
(`roo-sweep-<key of DIR>-*`); the parent removes it once the child is gone, also after killing
it on a timeout, and a sweep on DIR removes those that a killed sweep on DIR left behind.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

from harness.results import RESULTS_FILE, append_record, make_record, read_results
from harness.run_point import PointConfig, check_device, workload_files
from workloads.errors import SpecError, UserError

META_FILE = "sweep.meta.json"
LOCK_FILE = ".lock"
TMP_PREFIX = "roo-sweep-"
META_SCHEMA = "roo-bench/sweep-meta/1"
DEFAULT_POINT = "harness.run_point:run_point"
DEFAULT_TIMEOUT_S = 1800.0
REPO_ROOT = Path(__file__).resolve().parent.parent

_TOP = ("sweep", "base", "grid")
_SWEEP_KEYS = ("name", "description", "point", "timeout_s")


@dataclass(frozen=True)
class Point:
    config: PointConfig
    config_hash: str
    axes: dict


@dataclass(frozen=True)
class Sweep:
    path: Path
    sha256: str
    name: str
    point: str
    timeout_s: float
    points: tuple[Point, ...]
    axes: tuple[str, ...]


# --- parsing -------------------------------------------------------------------------------------
def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict):
            out.update(_flatten(v, key))
        else:
            out[key] = v
    return out


def _fmt(v) -> str:
    """A TOML value as the right-hand side of an `a.b=v` override (parsed back by the spec)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list | dict):
        return json.dumps(v)
    return str(v)


def _settings(d: dict, where: str) -> dict:
    """A [base] table or a bundle -> {key: value}; keys 'spec.a.b', 'model.a.b' or config keys."""
    out = {}
    for k, v in d.items():
        if k in ("spec", "model") and isinstance(v, str):
            out[k] = v  # a spec file / a model preset name (harness.run_point.workload_files)
        elif k in ("spec", "model"):
            if not isinstance(v, dict):
                raise UserError(
                    f"{where}.{k} must be a table of dotted overrides (e.g. impressions.value = 4) or a "
                    + ("spec file name" if k == "spec" else "model preset name")
                )
            for path, val in _flatten(v).items():
                out[f"{k}.{path}"] = val
        elif "." in k and k.split(".", 1)[0] in ("spec", "model"):
            out[k] = v  # a quoted dotted key inside a bundle: "spec.history.length.value" = 256
        else:
            out[k] = v
    return out


def _axes(grid: dict, path: Path) -> list[tuple[str, list]]:
    axes = []
    for name, vals in _flatten(grid).items():
        where = f"{path}: grid.{name}"
        if not isinstance(vals, list):
            raise UserError(f"{where} = {vals!r} must be a list of values")
        if not vals:
            raise UserError(f"{where} is empty; an axis needs at least one value")
        axes.append((name, vals))
    return axes


def _point_dict(settings: dict, where: str) -> dict:
    cfg: dict = {}
    spec_o, model_o = [], []
    for k, v in settings.items():
        if k in ("spec", "model") and isinstance(v, str):
            cfg[f"{k}_file" if k == "spec" else "model_preset"] = v
        elif k.startswith("spec."):
            spec_o.append(f"{k[5:]}={_fmt(v)}")
        elif k.startswith("model."):
            model_o.append(f"{k[6:]}={_fmt(v)}")
        elif k in ("spec_overrides", "model_overrides"):
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                raise UserError(f"{where}: {k} must be a list of 'a.b=v' strings")
            (spec_o if k == "spec_overrides" else model_o).extend(v)
        elif k == "axes":
            raise UserError(f"{where}: 'axes' is set by the sweep, not by the file")
        else:
            cfg[k] = v
    cfg["spec_overrides"] = cfg.get("spec_overrides", []) + spec_o
    cfg["model_overrides"] = cfg.get("model_overrides", []) + model_o
    return cfg


def _label(v):
    return v if not isinstance(v, dict) else _flatten(v)


def _check_model(spec, pc: PointConfig) -> None:
    """Model overrides of the default point function, checked without building the model."""
    try:
        from roo_ref.models import check_compatible, model_config_for
    except ImportError:  # no reference models in this checkout: the child reports it per point
        return
    cfg = model_config_for(spec, pc.preset, [f"attention_backend={pc.backend}", *pc.model_overrides])
    check_compatible(spec, cfg)


def _sweep_table(doc: dict, path: Path) -> tuple[str, str, float]:
    """The [sweep] table's (name, point function, timeout), checked; the tables' names too."""
    unknown = sorted(set(doc) - set(_TOP))
    if unknown:
        raise UserError(f"{path}: unknown table(s) {unknown}; allowed: {list(_TOP)}")
    for t in _TOP:
        if t in doc and not isinstance(doc[t], dict):
            raise UserError(f"{path}: {t} must be a table ([{t}])")
    meta = doc.get("sweep", {})
    unknown = sorted(set(meta) - set(_SWEEP_KEYS))
    if unknown:
        raise UserError(f"{path}: [sweep] unknown key(s) {unknown}; allowed: {list(_SWEEP_KEYS)}")
    name = meta.get("name", path.stem)
    point = meta.get("point", DEFAULT_POINT)
    timeout = meta.get("timeout_s", DEFAULT_TIMEOUT_S)
    if not isinstance(name, str) or not isinstance(point, str):
        raise UserError(f"{path}: [sweep] name and point must be strings")
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise UserError(f"{path}: [sweep] timeout_s={timeout!r} must be a number > 0")
    try:
        from harness.run_point_main import resolve

        resolve(point)
    except Exception as e:  # noqa: BLE001 — a bad point function is a user mistake in the file
        raise UserError(f"{path}: [sweep] point={point!r} cannot be imported: {type(e).__name__}: {e}") from None
    return name, point, timeout


def _grid_points(path: Path, base: dict, axes: list, point: str, device: str | None) -> list[Point]:
    """Every combination of the grid's axes over `base`, validated; two equal points are an error."""
    points: list[Point] = []
    seen: dict[str, dict] = {}
    for combo in itertools.product(*(vals for _, vals in axes)):
        settings = dict(base)
        labels = {}
        for (axis, _), v in zip(axes, combo, strict=True):
            labels[axis] = _label(v)
            if isinstance(v, dict):
                settings.update(_settings(v, f"{path}: grid.{axis}"))
            else:
                settings[axis] = v
        where = f"{path}: point {json.dumps(labels, sort_keys=True)}"
        try:
            cfg = workload_files(_point_dict(settings, where), path.parent, where)
        except SpecError as e:
            raise UserError(f"{where}: {e}") from None
        if device is not None:
            cfg["device"] = device
        cfg["axes"] = labels
        try:
            pc = PointConfig.from_dict(cfg, where)
            spec = pc.resolve_spec()  # overrides are checked now, not in a child half a sweep later
            if point == DEFAULT_POINT:
                _check_model(spec, pc)
        except (UserError, SpecError) as e:
            msg = str(e)
            raise UserError(msg if msg.startswith(str(path)) else f"{where}: {msg}") from None
        h = pc.config_hash()
        if h in seen:
            raise UserError(
                f"{path}: points {json.dumps(seen[h], sort_keys=True)} and "
                f"{json.dumps(labels, sort_keys=True)} "
                "are the same configuration; remove one value"
            )
        seen[h] = labels
        points.append(Point(pc, h, labels))
    return points


def load_sweep(path: str | Path, device: str | None = None) -> Sweep:
    """Parse and validate a sweep file; every problem is one UserError line (nothing is run)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"sweep file {path} does not exist")
    raw = path.read_bytes()
    try:
        doc = tomllib.loads(raw.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"sweep file {path} is not valid TOML: {e}") from None
    name, point, timeout = _sweep_table(doc, path)
    if "grid" not in doc:
        raise UserError(f"{path}: no [grid] table; a sweep needs at least one axis")
    base = _settings(doc.get("base", {}), f"{path}: base")
    axes = _axes(doc["grid"], path)
    if not axes:
        raise UserError(f"{path}: [grid] is empty; a sweep needs at least one axis")
    points = _grid_points(path, base, axes, point, device)
    for dev in sorted({p.config.device for p in points}):
        check_device(dev)
    return Sweep(
        path, hashlib.sha256(raw).hexdigest(), name, point, float(timeout), tuple(points), tuple(a for a, _ in axes)
    )


# --- running -------------------------------------------------------------------------------------
def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _write_json_atomic(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@contextlib.contextmanager
def _writer_lock(out: Path):
    """Hold the exclusive writer lock on `out` (a directory) or raise the one-line UserError.

    The lock file keeps the holder's pid while it is held (for the refusal message) and is emptied
    on release; it is never removed, since removing a lock file races with its next taker."""
    import fcntl

    fd = os.open(out / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            who = f" (pid {holder})" if holder.isdigit() else ""
            raise UserError(
                f"{out} is being written by another roo-bench sweep{who}; wait for it or choose another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the lock


def _tmp_prefix(out: Path) -> str:
    """The temp-directory prefix of points run for `out`: only a writer of `out` uses it."""
    return f"{TMP_PREFIX}{hashlib.sha256(str(out.resolve()).encode()).hexdigest()[:12]}-"


def _remove_stale_tmp(prefix: str) -> None:
    """Temp directories of points of a killed sweep on the same output (the caller holds its lock,
    so no live point uses them)."""
    for d in Path(tempfile.gettempdir()).glob(f"{prefix}*"):
        if d.is_dir():
            shutil.rmtree(d, ignore_errors=True)


def _check_out(out: Path, sweep: Sweep, resume: bool) -> tuple[dict | None, list[dict], list[str]]:
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory")
    meta_path, res_path = out / META_FILE, out / RESULTS_FILE
    meta = None
    if meta_path.exists():
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise UserError(f"--out {out}: {META_FILE} is unreadable ({e}); choose another --out") from None
    records, warnings = read_results(res_path) if res_path.exists() else ([], [])
    has_results = res_path.exists() and res_path.stat().st_size > 0
    if (has_results or meta is not None) and not resume:
        other = meta is not None and meta.get("sweep_sha256") != sweep.sha256
        if other:
            raise UserError(
                f"--out {out} holds results of another sweep ({meta.get('name')!r}, from "
                f"{meta.get('sweep_file')}); choose another --out, or pass --resume to add these points"
            )
        raise UserError(
            f"--out {out} already holds {len(records)} result(s) of this sweep; pass --resume to continue it "
            "or choose another --out"
        )
    return meta, records, warnings


class _Progress:
    """tqdm bar (ETA) on a terminal; one line per point otherwise (CI logs); silent if quiet."""

    def __init__(self, total: int, quiet: bool):
        self.total, self.n, self.t0, self.quiet = total, 0, time.monotonic(), quiet
        self.bar = None
        if not quiet and sys.stderr.isatty():
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, unit="pt", file=sys.stderr, dynamic_ncols=True)
            except ImportError:
                self.bar = None

    def update(self, point: Point, status: str, secs: float) -> None:
        self.n += 1
        if self.quiet:
            return
        if self.bar is not None:
            self.bar.set_postfix_str(f"{status} {json.dumps(point.axes, sort_keys=True)}"[:60])
            self.bar.update(1)
            return
        el = time.monotonic() - self.t0
        eta = el / self.n * (self.total - self.n)
        print(
            f"sweep: [{self.n}/{self.total}] {point.config_hash} {json.dumps(point.axes, sort_keys=True)} "
            f"{status} {secs:.1f}s, ETA {eta:.0f}s",
            file=sys.stderr,
            flush=True,
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _child_env() -> dict:
    env = dict(os.environ)
    parts = [str(REPO_ROOT), os.getcwd()] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(parts))
    return env


def _parent_failure(point: Point, status: str, error: str, log_tail: str) -> dict:
    from harness import provenance

    pc = point.config
    rec = make_record(
        "point",
        pc.to_dict(),
        {"stderr_tail": log_tail},
        status=status,
        error=error,
        provenance=provenance.collect(pc.seed, pc.device),
    )
    rec["config_hash"] = point.config_hash
    return rec


def _run_child(td: Path, sweep_point: str, point: Point, timeout_s: float) -> tuple[int | None, str]:
    """(exit status or None after a timeout, log tail) of the point's child, which is gone on return."""
    job, out, log = td / "job.json", td / "record.json", td / "child.log"
    job.write_text(
        json.dumps({"point": sweep_point, "config": point.config.to_dict(), "config_hash": point.config_hash})
    )
    with open(log, "wb") as logf:
        # Same process group as the sweep: killing the sweep's group kills the point too.
        proc = subprocess.Popen(
            [sys.executable, "-m", "harness.run_point_main", str(job), str(out)],
            stdout=logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=_child_env(),
        )
        try:
            rc = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            rc = None
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    return rc, log.read_text(errors="replace")[-4000:] if log.exists() else ""


def _child_failure(point: Point, rc: int, tail: str) -> dict:
    """The record of a child that exited without writing one (a signal or an exit status)."""
    if rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = str(-rc)
        hint = ""
        if -rc == signal.SIGKILL:
            hint = " (the kernel's OOM killer sends this when host memory runs out)"
        msg = f"the point's process was killed by signal {name}{hint}"
        return _parent_failure(point, "error", msg, tail)
    last = next((ln for ln in reversed(tail.splitlines()) if ln.strip()), "")
    msg = f"the point's process exited with status {rc}: {last}"[:500]
    return _parent_failure(point, "error", msg, tail)


def run_one(sweep_point: str, point: Point, timeout_s: float, tmp_prefix: str = TMP_PREFIX) -> dict:
    """Run one point in a child process; always returns a record (never raises for the point).
    The child's temp directory goes once the child has exited or been killed."""
    td = Path(tempfile.mkdtemp(prefix=tmp_prefix))
    try:
        rc, tail = _run_child(td, sweep_point, point, timeout_s)
        if rc is None:
            msg = f"timeout: the point ran past timeout_s={timeout_s:g} and was killed"
            return _parent_failure(point, "error", msg, tail)
        out = td / "record.json"
        if out.exists():
            rec = json.loads(out.read_text())
            rec["config_hash"] = point.config_hash
            return rec
    finally:
        shutil.rmtree(td, ignore_errors=True)
    return _child_failure(point, rc, tail)


def _new_meta(sweep: Sweep, meta: dict | None, timeout: float, resume: bool, device: str | None) -> dict:
    """DIR/sweep.meta.json: this sweep's points, and one history entry per run or resume."""
    from harness import provenance

    sha, dirty = provenance.git_state()
    now = _now()
    history = list((meta or {}).get("history", [])) + [
        {
            "sweep_sha256": sweep.sha256,
            "sweep_file": str(sweep.path),
            "started_utc": now,
            "resume": resume,
            "git_sha": sha,
            "git_dirty": dirty,
            "device_override": device,
        }
    ]
    return {
        "schema": META_SCHEMA,
        "name": sweep.name,
        "sweep_file": str(sweep.path),
        "sweep_sha256": sweep.sha256,
        "point": sweep.point,
        "timeout_s": timeout,
        "axes": list(sweep.axes),
        "points_total": len(sweep.points),
        "points": [{"config_hash": p.config_hash, "axes": p.axes} for p in sweep.points],
        "created_utc": (meta or {}).get("created_utc", now),
        "history": history,
        "results": RESULTS_FILE,
    }


def _run_points(sweep: Sweep, todo: list[Point], res_path: Path, timeout: float, tmp_prefix: str, quiet: bool) -> dict:
    """Run `todo` in order, appending each record as its child ends; {status: count}."""
    counts = {"ok": 0, "oom": 0, "error": 0}
    progress = _Progress(len(todo), quiet)
    try:
        for p in todo:
            t0 = time.monotonic()
            rec = run_one(sweep.point, p, timeout, tmp_prefix)
            append_record(res_path, rec)
            counts[rec["status"]] += 1
            progress.update(
                p, rec["status"] + (f" ({rec['error'][:60]})" if rec["error"] else ""), time.monotonic() - t0
            )
    finally:
        progress.close()
    return counts


def run_sweep(
    path: str | Path,
    out: str | Path,
    resume: bool = False,
    device: str | None = None,
    quiet: bool = False,
    timeout_s: float | None = None,
) -> dict:
    """Run (or resume) a sweep; returns the counts printed by `roo-bench sweep --json`."""
    sweep = load_sweep(path, device)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    with _writer_lock(out):  # held from reading DIR's records to appending the last one
        meta, records, warnings = _check_out(out, sweep, resume)
        for w in warnings:
            print(f"roo-bench sweep: warning: {w}", file=sys.stderr)
        timeout = float(timeout_s) if timeout_s is not None else sweep.timeout_s
        done = {r["config_hash"] for r in records}
        todo = [p for p in sweep.points if p.config_hash not in done]
        tmp_prefix = _tmp_prefix(out)
        _remove_stale_tmp(tmp_prefix)
        _write_json_atomic(out / META_FILE, _new_meta(sweep, meta, timeout, resume, device))
        res_path = out / RESULTS_FILE
        counts = _run_points(sweep, todo, res_path, timeout, tmp_prefix, quiet)
    return {
        "sweep": sweep.name,
        "out": str(out),
        "results": str(res_path),
        "points_total": len(sweep.points),
        "points_done": sum(counts.values()),
        "points_skipped": len(sweep.points) - len(todo),
        "points_failed": counts["oom"] + counts["error"],
        "points_ok": counts["ok"],
        "points_oom": counts["oom"],
    }
