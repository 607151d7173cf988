"""`roo-bench comm`: the embedding all-to-all benchmark on W ranks, launched with torchrun.

Runs `python -m torch.distributed.run --standalone --nproc-per-node W -m harness.commands.comm ...`
in its own process group, under a timeout; on a timeout or a failure the whole group is killed, so
no rank is left behind. Launch-time mistakes (ranks < 1, more ranks than GPUs, NCCL without a GPU)
are caught before anything starts; a rank's own error (e.g. a backend that fails to initialize)
comes back as its one line. Both are exit 2.

Under torchrun this module is also every rank's entry point (`rank_main`, harness.comm.runner does
the work), so it can be launched by hand, e.g. on several nodes:

    torchrun --standalone --nproc-per-node W -m harness.commands.comm --preset early-ranking --device cuda

Rank 0 then prints one summary line per sharding and writes the records where asked.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

from workloads.errors import UserError
from workloads.records import Kind, emit_flat

REPO_ROOT = Path(__file__).resolve().parents[2]
RANK_MODULE = "harness.commands.comm"


# --- arguments -----------------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options shared by `roo-bench comm` and the rank entry point."""
    from harness.comm.config import BACKENDS

    p.add_argument("--preset", default=None, help="workload preset (default tiny)")
    p.add_argument(
        "--spec",
        default=None,
        metavar="FILE",
        help="workload spec file (TOML/JSON, e.g. from `roo-bench fit`) instead of --preset; the "
        "exchange needs no model (--embedding-dim sets the vectors)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a spec field, e.g. impressions.mean=20 (repeatable)",
    )
    p.add_argument("--device", default="cpu", help="cpu (gloo) or cuda (NCCL, one GPU per rank)")
    p.add_argument("--backend", default="auto", help="|".join(BACKENDS) + " (auto: gloo/cpu, nccl/cuda)")
    p.add_argument("--assign", default="greedy", help="table placement: greedy (size balance) | round_robin")
    p.add_argument("--embedding-dim", type=int, default=128)
    # default None: roo_ref.cost.comm.DEFAULT_ROW_CAP, resolved by CommConfig (no torch import here)
    p.add_argument(
        "--row-cap", type=int, default=None, help="rows per table at most (ids modulo the rows), so tables fit"
    )
    p.add_argument(
        "--requests",
        type=int,
        default=None,
        help="requests per rank per step (default: the preset's requests_per_batch)",
    )
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--comm-dtype", default="fp32", help="dtype of the exchanged embeddings: fp32|bf16|fp16")
    p.add_argument(
        "--max-history",
        type=int,
        default=0,
        help="exchange each request's last N history events as a sequence, one row per event (HSTU; "
        "hstu-ranking's model keeps 256); 0 (default): no history exchange",
    )
    p.add_argument(
        "--init-timeout", type=float, default=60.0, help="process-group timeout (s): init and every collective"
    )


def config_from_args(args, shardings):
    from harness.comm.config import CommConfig

    return CommConfig(
        preset=args.preset,
        spec_file=args.spec,
        overrides=tuple(args.overrides),
        device=args.device,
        backend=args.backend,
        shardings=tuple(shardings),
        assign=args.assign,
        embedding_dim=args.embedding_dim,
        row_cap=args.row_cap,
        requests_per_rank=args.requests,
        steps=args.steps,
        warmup=args.warmup,
        seed=args.seed,
        comm_dtype=args.comm_dtype,
        max_history=args.max_history,
        init_timeout_s=args.init_timeout,
    )


def register(sub) -> None:
    p = sub.add_parser("comm", help="embedding all-to-all bytes and time on W ranks (torchrun), both layouts")
    p.add_argument("--nproc", type=int, default=2, help="ranks (processes) to launch (default 2)")
    add_arguments(p)
    p.add_argument("--sharding", default="table", help="table (table-wise) or row (row-wise)")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds for the whole run (default 900)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--out", default=None, help="append the result record to this JSONL file")
    p.set_defaults(func=_run)


# --- the launcher --------------------------------------------------------------------------------------
def _launch_argv(args, cfg, record_file: str, error_file: str) -> list[str]:
    argv = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        str(args.nproc),
        "--max-restarts",
        "0",
        "-m",
        RANK_MODULE,
        *(["--spec", os.path.abspath(args.spec)] if args.spec else ["--preset", cfg.preset]),
        "--device",
        args.device,
        "--backend",
        args.backend,
        "--sharding",
        args.sharding,
        "--assign",
        args.assign,
        "--embedding-dim",
        str(args.embedding_dim),
        "--row-cap",
        str(cfg.row_cap),
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        "--seed",
        str(args.seed),
        "--comm-dtype",
        args.comm_dtype,
        "--max-history",
        str(args.max_history),
        "--init-timeout",
        str(args.init_timeout),
        "--record-file",
        record_file,
        "--error-file",
        error_file,
    ]
    if args.requests is not None:
        argv += ["--requests", str(args.requests)]
    for o in args.overrides:
        argv += ["--set", o]
    return argv


def _rank_env() -> dict:
    """The ranks' environment: this one, with the repository importable and NVLink multicast off."""
    env = dict(os.environ)
    env["NCCL_NVLS_ENABLE"] = "0"  # NVLink multicast off (it can take a shared host's GPUs down)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


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


def _launch_failure(proc: subprocess.Popen, err: str, error_file: str, nproc: int) -> Exception:
    """The error of a launch that gave no records: a rank's own line, else torchrun's last."""
    rank_err = _rank_error(error_file, nproc)
    if rank_err is not None:
        line, code = rank_err
        line = line.removeprefix("roo-bench comm: error: ")
        return UserError(line) if code == 2 else RuntimeError(line)
    tail = [ln for ln in (err or "").splitlines() if ln.strip()]
    last = tail[-1] if tail else "no output"
    return RuntimeError(f"torchrun exited with code {proc.returncode}: {last}")


def run_comm(args) -> list[dict]:
    """Validate, launch, wait; return the result records (one per sharding). Raises UserError."""
    from harness.comm.config import check_devices

    if args.sharding not in ("table", "row"):
        raise UserError(f"--sharding={args.sharding!r}; allowed: table, row")
    check_devices(args.device, args.nproc, args.backend)
    cfg = config_from_args(args, [args.sharding])  # validates every other field before any process starts
    if not args.timeout > 0:
        raise UserError(f"--timeout={args.timeout} must be > 0 seconds")
    with tempfile.TemporaryDirectory(prefix="roo-comm-") as tmp:
        record_file = os.path.join(tmp, "records.json")
        error_file = os.path.join(tmp, "error")
        proc = subprocess.Popen(
            _launch_argv(args, cfg, record_file, error_file),
            cwd=REPO_ROOT,
            env=_rank_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            out, err = proc.communicate(timeout=args.timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            proc.communicate()
            raise UserError(
                f"the run exceeded --timeout={args.timeout:g} s; every rank was killed "
                "(raise --timeout, or lower --steps/--requests)"
            ) from None
        finally:
            if proc.poll() is None:
                _kill_group(proc)
        if proc.returncode == 0 and os.path.isfile(record_file):
            with open(record_file) as f:
                return json.load(f)
        _kill_group(proc)  # a failed launch: ranks that outlived the launcher, if any
        raise _launch_failure(proc, err, error_file, args.nproc)


# --- printing ------------------------------------------------------------------------------------------
def summary(rec: dict, out: str | None) -> dict:
    """The machine-readable summary of one record (the contract of `roo-bench comm --json`)."""
    m, c = rec["metrics"], rec["config"]
    keys = (
        "counted_bytes_per_step",
        "analytic_bytes_per_step",
        "expected_bytes_per_step",
        "cross_bytes_per_step",
        "step_ms_median",
        "comm_ms_median",
        "bus_bw_gbps",
        "alg_bw_gbps",
        "predicted_comm_ms",
        "impressions_per_step",
        "requests_per_step",
        "bytes_match",
    )
    return {
        "preset": c["preset"],
        "spec_file": c.get("spec_file"),
        "workload": c["preset"] or c["spec"]["name"],
        "world_size": c["world_size"],
        "device": c["device"],
        "backend": c["backend"],
        "sharding": c["model"]["sharding"],
        "embedding_dim": c["model"]["embedding_dim"],
        "comm_dtype": c["model"]["comm_dtype"],
        "max_history": c["model"].get("max_history", 0),
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


def _print_text(s: dict) -> None:
    print(
        f"{s['workload']}: W={s['world_size']} {s['backend']} {s['sharding']}-wise, "
        f"dim {s['embedding_dim']}, {s['requests_per_rank']} requests/rank"
    )
    for lay, L in s["layouts"].items():
        bw = L["bus_bw_gbps"]
        print(
            f"  {lay:>10}: {L['counted_bytes_per_step'] / 1e6:10.3f} MB/step handed "
            f"(analytic {L['analytic_bytes_per_step'] / 1e6:.3f}, match {L['bytes_match']}), "
            f"{L['step_ms_median']:.2f} ms/step, comm {L['comm_ms_median']:.2f} ms, "
            f"busbw {'n/a' if bw is None else f'{bw:.2f} GB/s'}"
        )
    print(
        f"  ROO saving: {100 * s['saving']:.1f}% of bytes, "
        f"{100 * (s['saving_step_ms'] or 0):.1f}% of step time; embeddings equal: {s['embeddings_equal']}"
    )


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
    s = summary(records[0], args.out)
    if args.json:
        emit_flat(Kind.COMM, s, provenance=records[0].get("provenance"))
    else:
        _print_text(s)
    return 0


def summary_line(rec: dict) -> str:
    """Rank 0's one line per record under torchrun."""
    m, c = rec["metrics"], rec["config"]
    parts = [f"{c['preset'] or c['spec']['name']} W={c['world_size']} {c['backend']} {c['model']['sharding']}-wise:"]
    for lay, L in m["layouts"].items():
        parts.append(
            f"{lay} {L['counted_bytes_per_step'] / 1e6:.3f} MB/step (analytic "
            f"{L['analytic_bytes_per_step'] / 1e6:.3f}) {L['step_ms_median']:.2f} ms/step;"
        )
    parts.append(
        f"saving {100 * (m['saving'] or 0):.1f}%, bytes match: {m['bytes_match']}, "
        f"embeddings equal: {m['verify']['embeddings_equal']}"
    )
    return " ".join(parts)


# --- the rank entry point (under torchrun) -------------------------------------------------------------
def build_rank_parser() -> argparse.ArgumentParser:
    from roo_ref.cost.comm import SHARDINGS

    p = argparse.ArgumentParser(
        prog=f"python -m {RANK_MODULE}", description="one rank of the embedding all-to-all benchmark (under torchrun)"
    )
    add_arguments(p)
    p.add_argument(
        "--sharding",
        nargs="+",
        default=["table"],
        choices=SHARDINGS,
        help="one or more shardings, each measured and recorded (default table)",
    )
    p.add_argument("--out", default=None, help="append the result records to this JSONL file (rank 0)")
    p.add_argument("--record-file", default=None, help="write the records as one JSON list here (rank 0)")
    p.add_argument("--error-file", default=None, help="a failing rank writes its error line to FILE.rankN")
    return p


def _write_atomic(path: str, text: str) -> None:
    p = Path(path)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, p)


def _publish(args, records: list[dict]) -> None:
    """Rank 0's output: the record file, the JSONL store, one summary line per record."""
    if args.record_file:
        _write_atomic(args.record_file, json.dumps(records))
    if args.out:
        from harness.results import append_record

        for rec in records:
            append_record(args.out, rec)
    for rec in records:
        print(summary_line(rec), flush=True)


def _fail(args, rank: int, line: str, code: int) -> int:
    line = " ".join(line.split())  # one line, whatever the exception text held
    print(line, file=sys.stderr, flush=True)
    if args.error_file:
        try:
            _write_atomic(f"{args.error_file}.rank{rank}", json.dumps({"line": line, "code": code}))
        except OSError:
            pass
    return code


def rank_main(argv: list[str] | None = None) -> int:
    """One rank under torchrun: run every sharding; rank 0 publishes the records."""
    args = build_rank_parser().parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    try:
        from harness.comm.runner import rank_env, run_rank

        rank, world, local_rank = rank_env()
        records = run_rank(config_from_args(args, args.sharding), rank, world, local_rank)
        if records is not None:
            _publish(args, records)
        return 0
    except UserError as e:
        return _fail(args, rank, f"roo-bench comm: error: {e}", 2)
    except Exception as e:  # noqa: BLE001 — a crash: the traceback, and one line for the launcher
        traceback.print_exc()
        return _fail(args, rank, f"roo-bench comm: rank {rank} failed: {type(e).__name__}: {e}", 1)


if __name__ == "__main__":
    sys.exit(rank_main())
