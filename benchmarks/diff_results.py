"""Compare the JSON results of two `roo-bench demo` output directories, timing aside.

    python -m benchmarks.diff_results OLD_DIR NEW_DIR [--all]

Checks that a change to how the demo writes its results kept every number: each JSON file of
OLD_DIR (results/*.json, logs/*.json, data/*/*/_manifest.json, sweep/results.jsonl) is matched with
NEW_DIR's file of the same name, both are read as (kind, config, metrics) — a record as it is, a
bare `--json` object of an earlier version split the way `workloads.records.split_flat` splits it —
and compared value by value. Points of a sweep are matched by their config hash. Values that
measure time or depend on it (wall seconds, step times, throughput, calibrated roofs, energy) differ
from run to run and are counted, not listed; provenance (git state, host, clock) is left out.
Paths that name the output directory or the checkout are compared relative to them. Exit code 1 if anything else
differs or a file is missing on one side.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from workloads.records import Kind, legacy_kind, schema_version, split_flat

# A leaf whose dotted path matches this measures time or follows from a time measurement.
TIMING = re.compile(
    r"(^|\.)(seconds|[a-z_]*_s|[a-z_]*_ms(_[a-z0-9]+)?|step_ms\..*|comm_ms\..*|[a-z_]*per_s"
    r"|[a-z_]*flops|[a-z0-9_]*bandwidth|[a-z_]*bw_gbps|[a-z_]*speedup[a-z_]*|speedup_ci(\.\d+)?"
    r"|[a-z_]*tflops[a-z_]*|step_error|speedup_error|energy\..*|fp32_flops|bf16_flops|dropped_ms"
    r"|saving_step_ms|power_w[a-z_]*|[a-z_]*util[a-z_]*|peak_mem_bytes|memory_bytes|calibration\..*)$"
)
# A path into the checkout that ran the demo (the sweep file): compared from the checkout's root.
REPO_PATH = re.compile(r"\S*/((?:harness|reports)/\S+)")
# The demo's files whose earlier versions are bare objects under a name outside the legacy table.
BARE_KINDS = {"sweep-summary.json": Kind.SWEEP}


def _sections(path: Path, obj) -> tuple[str, dict, dict]:
    """(kind, config, metrics) of a record or of a bare `--json` object."""
    if isinstance(obj, dict) and schema_version(obj.get("schema")) is not None:
        return str(obj["kind"]), dict(obj["config"]), dict(obj["metrics"])
    kind = legacy_kind(path.name, obj) or BARE_KINDS.get(path.name)
    if kind is None:  # not a result (a dataset manifest): compared as it is
        return "-", {}, dict(obj)
    config, metrics, _ = split_flat(kind, obj)
    return kind.value, config, metrics


def _leaves(x, prefix: str = "") -> dict[str, object]:
    if isinstance(x, dict):
        out: dict[str, object] = {}
        for k, v in x.items():
            out.update(_leaves(v, f"{prefix}.{k}" if prefix else str(k)))
        return out or {prefix: {}}
    if isinstance(x, list):
        out = {}
        for i, v in enumerate(x):
            out.update(_leaves(v, f"{prefix}.{i}"))
        return out or {prefix: []}
    return {prefix: x}


class Diff:
    def __init__(self, old_root: Path, new_root: Path, show_all: bool):
        self.roots = (str(old_root.resolve()), str(new_root.resolve()))
        self.show_all = show_all
        self.same = self.timing = 0
        self.problems: list[str] = []

    def _norm(self, v, side: int):
        if not isinstance(v, str):
            return v
        return REPO_PATH.sub(r"<repo>/\1", v.replace(self.roots[side], "<out>"))

    def compare(self, where: str, old: dict, new: dict) -> None:
        a, b = _leaves(old), _leaves(new)
        for key in list(a) + [k for k in b if k not in a]:
            if key not in b or key not in a:
                side = "old" if key in a else "new"
                self.problems.append(f"{where}: {key} only in the {side} output")
                continue
            va, vb = self._norm(a[key], 0), self._norm(b[key], 1)
            if va == vb and type(va) is type(vb):
                self.same += 1
            elif TIMING.search(key):
                self.timing += 1
                if self.show_all:
                    print(f"  timing {where}: {key}: {va!r} -> {vb!r}")
            else:
                self.problems.append(f"{where}: {key}: {va!r} -> {vb!r}")

    def file(self, rel: str, old_path: Path, new_path: Path) -> None:
        if not new_path.is_file():
            self.problems.append(f"{rel}: missing in the new output")
            return
        if rel.endswith(".jsonl"):
            self._jsonl(rel, old_path, new_path)
            return
        ko, co, mo = _sections(old_path, json.loads(old_path.read_text()))
        kn, cn, mn = _sections(new_path, json.loads(new_path.read_text()))
        if ko != kn:
            self.problems.append(f"{rel}: kind {ko!r} -> {kn!r}")
        self.compare(f"{rel} config", co, cn)
        self.compare(f"{rel} metrics", mo, mn)

    def _jsonl(self, rel: str, old_path: Path, new_path: Path) -> None:
        def by_hash(p: Path) -> dict[str, dict]:
            recs = [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
            return {r["config_hash"]: r for r in recs}

        old, new = by_hash(old_path), by_hash(new_path)
        for h in old.keys() | new.keys():
            if h not in old or h not in new:
                self.problems.append(f"{rel}: point {h} only in the {'old' if h in old else 'new'} output")
                continue
            for part in ("kind", "status"):
                if old[h][part] != new[h][part]:
                    self.problems.append(f"{rel} {h}: {part} {old[h][part]!r} -> {new[h][part]!r}")
            self.compare(f"{rel} {h} config", old[h]["config"], new[h]["config"])
            self.compare(f"{rel} {h} metrics", old[h]["metrics"], new[h]["metrics"])


def _result_files(root: Path) -> list[str]:
    pats = ("results/*.json", "logs/*.json", "data/*/*/_manifest.json", "data/*/*/manifest.json", "sweep/results.jsonl")
    return sorted(str(p.relative_to(root)) for pat in pats for p in root.glob(pat))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.diff_results", description=__doc__.splitlines()[0])
    ap.add_argument("old", type=Path, help="the earlier demo output directory")
    ap.add_argument("new", type=Path, help="the demo output directory to check")
    ap.add_argument("--all", action="store_true", help="list the timing differences too")
    args = ap.parse_args(argv)
    d = Diff(args.old, args.new, args.all)
    old_files, new_files = _result_files(args.old), _result_files(args.new)
    for rel in old_files:
        d.file(rel, args.old / rel, args.new / rel)
    d.problems += [f"{rel}: only in the new output" for rel in new_files if rel not in old_files]
    for p in d.problems:
        print(p)
    print(
        f"{len(old_files)} file(s): {d.same} value(s) equal, {d.timing} timing value(s) differ (not compared), "
        f"{len(d.problems)} other difference(s)"
    )
    return 1 if d.problems else 0


if __name__ == "__main__":
    sys.exit(main())
