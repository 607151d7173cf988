"""`roo-bench comm`: the embedding all-to-all benchmark on W ranks, launched with torchrun.

Runs `python -m torch.distributed.run --standalone --nproc-per-node W -m harness.comm ...` in its own
process group, under a timeout; on a timeout or a failure the whole group is killed, so no rank is
left behind. Launch-time mistakes (ranks < 1, more ranks than GPUs, NCCL without a GPU) are caught
before anything starts; a rank's own error (e.g. a backend that fails to initialize) comes back as
its one line. Both are exit 2.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from workloads.errors import UserError

REPO_ROOT = Path(__file__).resolve().parents[2]


def register(sub) -> None:
    from harness.comm import add_arguments

    p = sub.add_parser("comm", help="embedding all-to-all bytes and time on W ranks (torchrun), both layouts")
    p.add_argument("--nproc", type=int, default=2, help="ranks (processes) to launch (default 2)")
    add_arguments(p)
    p.add_argument("--sharding", default="table", help="table (table-wise) or row (row-wise)")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds for the whole run (default 900)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--out", default=None, help="append the result record to this JSONL file")
    p.set_defaults(func=_run)


def _launch_argv(args, record_file: str, error_file: str) -> list[str]:
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
            str(args.nproc), "--max-restarts", "0", "-m", "harness.comm",
            "--preset", args.preset, "--device", args.device, "--backend", args.backend,
            "--sharding", args.sharding, "--assign", args.assign, "--embedding-dim", str(args.embedding_dim),
            "--row-cap", str(args.row_cap), "--steps", str(args.steps), "--warmup", str(args.warmup),
            "--seed", str(args.seed), "--comm-dtype", args.comm_dtype,
            "--init-timeout", str(args.init_timeout), "--record-file", record_file,
            "--error-file", error_file]
    if args.requests is not None:
        argv += ["--requests", str(args.requests)]
    for o in args.overrides:
        argv += ["--set", o]
    return argv


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGTERM the launcher's own process group (torchrun and its ranks), then SIGKILL what is left
    (a rank can outlive the launcher)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            return  # the group is empty: everything exited
        try:
            proc.wait(timeout=10.0)
        except subprocess.TimeoutExpired:
            pass


def _rank_error(error_file: str, nproc: int) -> tuple[str, int] | None:
    """The lowest rank's error line and exit code, if any rank wrote one."""
    for r in range(nproc):
        p = Path(f"{error_file}.rank{r}")
        if p.is_file():
            try:
                d = json.loads(p.read_text())
                return str(d["line"]), int(d["code"])
            except (OSError, ValueError, KeyError):
                continue
    return None


def run_comm(args) -> list[dict]:
    """Validate, launch, wait; return the result records (one per sharding). Raises UserError."""
    from harness.comm import check_devices, config_from_args

    if args.sharding not in ("table", "row"):
        raise UserError(f"--sharding={args.sharding!r}; allowed: table, row")
    check_devices(args.device, args.nproc, args.backend)
    config_from_args(args, [args.sharding])  # validates every other field before any process starts
    if not args.timeout > 0:
        raise UserError(f"--timeout={args.timeout} must be > 0 seconds")
    with tempfile.TemporaryDirectory(prefix="roo-comm-") as tmp:
        record_file = os.path.join(tmp, "records.json")
        error_file = os.path.join(tmp, "error")
        env = dict(os.environ)
        env["NCCL_NVLS_ENABLE"] = "0"  # NVLink multicast off (it can take a shared host's GPUs down)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
        env.setdefault("OMP_NUM_THREADS", "1")
        proc = subprocess.Popen(_launch_argv(args, record_file, error_file), cwd=REPO_ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        try:
            out, err = proc.communicate(timeout=args.timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            proc.communicate()
            raise UserError(f"the run exceeded --timeout={args.timeout:g} s; every rank was killed "
                            "(raise --timeout, or lower --steps/--requests)") from None
        finally:
            if proc.poll() is None:
                _kill_group(proc)
        if proc.returncode == 0 and os.path.isfile(record_file):
            with open(record_file) as f:
                return json.load(f)
        _kill_group(proc)  # a failed launch: ranks that outlived the launcher, if any
        rank_err = _rank_error(error_file, args.nproc)
        if rank_err is not None:
            line, code = rank_err
            line = line.removeprefix("roo-bench comm: error: ")
            if code == 2:
                raise UserError(line)
            raise RuntimeError(line)
        tail = [ln for ln in (err or "").splitlines() if ln.strip()]
        last = tail[-1] if tail else "no output"
        raise RuntimeError(f"torchrun exited with code {proc.returncode}: {last}")


def summary(rec: dict, out: str | None) -> dict:
    """The machine-readable summary of one record (the contract of `roo-bench comm --json`)."""
    m, c = rec["metrics"], rec["config"]
    keys = ("counted_bytes_per_step", "analytic_bytes_per_step", "expected_bytes_per_step",
            "cross_bytes_per_step", "step_ms_median", "comm_ms_median", "bus_bw_gbps", "alg_bw_gbps",
            "predicted_comm_ms",
            "impressions_per_step", "requests_per_step", "bytes_match")
    return {
        "preset": c["preset"],
        "world_size": c["world_size"],
        "device": c["device"],
        "backend": c["backend"],
        "sharding": c["model"]["sharding"],
        "embedding_dim": c["model"]["embedding_dim"],
        "comm_dtype": c["model"]["comm_dtype"],
        "requests_per_rank": c["requests_per_rank"],
        "steps": c["steps"],
        "layouts": {lay: {k: L[k] for k in keys} for lay, L in m["layouts"].items()},
        "saving": m["saving"],
        "saving_cross": m["saving_cross"],
        "saving_step_ms": m["saving_step_ms"],
        "bytes_match": m["bytes_match"],
        "embeddings_equal": m["verify"]["embeddings_equal"],
        "grads_close": m["verify"]["grads_close"],
        "device_name": rec["provenance"].get("device_name"),
        "config_hash": rec["config_hash"],
        "out": out,
    }


def _run(args) -> int:
    try:
        records = run_comm(args)
    except RuntimeError as e:
        print(f"roo-bench comm: error: {e}", file=sys.stderr)
        return 1
    if args.out:
        from harness.results import append_record

        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        for rec in records:
            append_record(args.out, rec)
    rec = records[0]
    s = summary(rec, args.out)
    if args.json:
        print(json.dumps(s))
        return 0
    print(f"{s['preset']}: W={s['world_size']} {s['backend']} {s['sharding']}-wise, "
          f"dim {s['embedding_dim']}, {s['requests_per_rank']} requests/rank")
    for lay, L in s["layouts"].items():
        bw = L["bus_bw_gbps"]
        print(f"  {lay:>10}: {L['counted_bytes_per_step'] / 1e6:10.3f} MB/step handed "
              f"(analytic {L['analytic_bytes_per_step'] / 1e6:.3f}, match {L['bytes_match']}), "
              f"{L['step_ms_median']:.2f} ms/step, comm {L['comm_ms_median']:.2f} ms, "
              f"busbw {'n/a' if bw is None else f'{bw:.2f} GB/s'}")
    print(f"  ROO saving: {100 * s['saving']:.1f}% of bytes, "
          f"{100 * (s['saving_step_ms'] or 0):.1f}% of step time; embeddings equal: {s['embeddings_equal']}")
    return 0
