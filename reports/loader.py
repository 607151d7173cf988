"""Read result files into one tolerant, normalized ResultSet.

Inputs (docs/contracts.md "Results"; the record contract is `workloads.records`):
- `*.jsonl`: one result record per line (`schema: roo-bench/result/1`, `kind`, `config`, `metrics`,
  `provenance`). A truncated or foreign line, or a record of another schema version, is skipped with
  a warning naming the file and the line; the warning is shown in the report too.
- `*.json`: one object, or a JSON array of them. A result record (has `schema` and `kind`), or a
  bare `--json` object of an earlier version, read by its file name through the explicit legacy
  table `workloads.records.LEGACY_FILES` (`storage*.json`, `model*.json`, `calibration*.json`,
  `comm*.json`, `project*.json`, `demo*.json`, each with its kind's keys). A bare object elsewhere
  is not a result. Every record carries its kind; nothing is guessed from keys alone.
- directories are scanned recursively for both.

Every record is normalized to the result-record shape (`kind`, `status`, `config`, `metrics`,
`provenance`) plus a `source` (file, line, origin label) so the report never guesses later. The
report reads the `--json` output of every command (KINDS: every kind of `workloads.records.Kind`);
the kinds with a section of their own are in SECTION_KINDS, the others are listed under provenance.
A record of a kind this roo-bench does not know is skipped with a warning.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from workloads import records
from workloads.errors import UserError
from workloads.layout import LAYOUTS
from workloads.records import KNOWN_VERSIONS, SCHEMA_PREFIX, STATUSES, Kind

# The kinds the report reads: the `--json` output of every command.
KINDS: tuple[str, ...] = records.KINDS
# The kinds a section shows; a record of another kind is listed with its file under provenance.
SECTION_KINDS: tuple[str, ...] = tuple(
    k.value
    for k in (
        Kind.POINT,
        Kind.BENCH,
        Kind.PROFILE,
        Kind.STORAGE,
        Kind.CALIBRATION,
        Kind.COMM,
        Kind.MODEL,
        Kind.VALIDATE,
        Kind.PROJECT,
        Kind.DEMO,
    )
)
# A legacy bare object's keys that say where it ran, copied into its config for the report.
LEGACY_CONFIG_KEYS = ("preset", "device", "nproc", "world_size", "backend", "dtype")
# Committed GPU results live under reports/data/<device>/.
COMMITTED_MARK = ("reports", "data")
COMPANIONS = {"sweep.meta.json", "_manifest.json", "manifest.json"}

__all__ = ["KINDS", "LAYOUTS", "SECTION_KINDS", "ResultSet", "Source", "device_label", "legacy_kind", "load", "num"]


@dataclass
class Source:
    path: str
    line: int | None
    committed: bool

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}" if self.line is not None else self.path


@dataclass
class ResultSet:
    records: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    def of(self, kind: str) -> list[dict]:
        return [r for r in self.records if r["kind"] == kind]


def find_result_files(paths: list[str]) -> list[Path]:
    """Expand files and directories (recursively: *.jsonl, *.json); sorted, without duplicates."""
    found: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise UserError(
                f"results path {raw!r} does not exist; pass result files (*.jsonl, *.json) or directories holding them"
            )
        if p.is_dir():
            # Known companions of result files (a sweep's meta, a dataset's manifest) are not results;
            # skipped quietly when scanning a directory, warned about when named explicitly.
            found += sorted(
                q for q in p.rglob("*") if q.is_file() and q.suffix in (".jsonl", ".json") and q.name not in COMPANIONS
            )
        else:
            found.append(p)
    seen: set[Path] = set()
    out = []
    for p in found:
        r = p.resolve()
        if r not in seen:
            seen.add(r)
            out.append(p)
    if not out:
        raise UserError(f"no result files found in {', '.join(paths)} (looked for *.jsonl and *.json)")
    return out


def is_committed(path: Path) -> bool:
    parts = path.resolve().parts
    return any(parts[i : i + 2] == COMMITTED_MARK for i in range(len(parts) - 1))


def load(paths: list[str]) -> ResultSet:
    """Load and normalize every record; raise UserError when nothing usable remains."""
    files = find_result_files(paths)
    rs = ResultSet(files=[str(f) for f in files])
    for f in files:
        committed = is_committed(f)
        try:
            text = f.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            rs.warnings.append(f"{f}: skipped, cannot read it as UTF-8 text ({type(e).__name__})")
            continue
        if f.suffix == ".jsonl":
            _load_jsonl(f, text, committed, rs)
        else:
            _load_json(f, text, committed, rs)
    if not rs.records:
        first = f"; first problem: {rs.warnings[0]}" if rs.warnings else ""
        raise UserError(f"no usable results in {len(files)} file(s){first}")
    return rs


def _load_jsonl(f: Path, text: str, committed: bool, rs: ResultSet) -> None:
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        src = Source(str(f), i, committed)
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            rs.warnings.append(f"{src.where}: skipped, truncated or not JSON (column {e.colno}: {e.msg.lower()})")
            continue
        rec, why = _as_record(obj, src, allow_bare=False)
        if rec is None:
            rs.warnings.append(f"{src.where}: skipped, {why}")
        else:
            rs.records.append(rec)


def _load_json(f: Path, text: str, committed: bool, rs: ResultSet) -> None:
    src = Source(str(f), None, committed)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        rs.warnings.append(f"{f}:{e.lineno}: skipped, truncated or not JSON ({e.msg})")
        return
    items = obj if isinstance(obj, list) else [obj]
    for j, item in enumerate(items):
        s = Source(str(f), j + 1, committed) if isinstance(obj, list) else src
        rec, why = _as_record(item, s, allow_bare=True)
        if rec is None:
            rs.warnings.append(f"{s.where}: skipped, {why}")
        else:
            rs.records.append(rec)


def legacy_kind(path: Path, obj) -> str | None:
    """The kind of a schema-less object in `path` (None: not a roo-bench output); see
    `workloads.records.LEGACY_FILES` for the file names and key sets this accepts."""
    kind = records.legacy_kind(Path(path).name, obj)
    return None if kind is None else kind.value


def _envelope(obj: dict, kind: str) -> dict:
    return {
        "kind": kind,
        "status": obj.get("status") or "ok",
        "error": obj.get("error"),
        "config_hash": obj.get("config_hash") or "",
        "config": obj.get("config") if isinstance(obj.get("config"), dict) else {},
        "provenance": obj.get("provenance") if isinstance(obj.get("provenance"), dict) else {},
    }


def _from_record(obj: dict, schema) -> tuple[dict | None, str]:
    """A record that names its schema: checked against the contract, normalized for the report."""
    if not isinstance(schema, str) or not schema.startswith(SCHEMA_PREFIX):
        return None, f"foreign record (schema {schema!r}, expected {SCHEMA_PREFIX}1)"
    if records.schema_version(schema) not in KNOWN_VERSIONS:
        return None, (
            f"incompatible schema version {schema!r} (this report reads "
            f"{', '.join(SCHEMA_PREFIX + str(v) for v in KNOWN_VERSIONS)})"
        )
    kind = obj.get("kind")
    if kind not in KINDS:
        return None, f"unknown record kind {kind!r} (known: {', '.join(KINDS)})"
    metrics = obj.get("metrics")
    if not isinstance(metrics, dict):
        return None, "record has no `metrics` object"
    return {**_envelope(obj, kind), "metrics": metrics}, ""


def _from_legacy(obj: dict, kind: str) -> dict:
    """A bare `--json` object of a known kind (an earlier version's output): the whole object is
    its metrics, and the keys that say where it ran are copied into config as well."""
    rec = _envelope(obj, kind)
    cfg = dict(rec["config"])
    for k in LEGACY_CONFIG_KEYS:
        if k in obj and k not in cfg:
            cfg[k] = obj[k]
    return {**rec, "config": cfg, "metrics": obj}


def _as_record(obj, src: Source, allow_bare: bool) -> tuple[dict | None, str]:
    """Normalize one object of `src`. A schema-less object is a record when it names its kind, or
    (`allow_bare`: a `*.json` file) when its file name is a known legacy one with that kind's keys."""
    if not isinstance(obj, dict):
        return None, f"not a roo-bench result (a JSON {type(obj).__name__}, expected an object)"
    schema = obj.get("schema")
    if schema is not None:
        rec, why = _from_record(obj, schema)
        if rec is None:
            return None, why
    else:
        own = obj.get("kind") if obj.get("kind") in KINDS else None
        kind = own or (legacy_kind(Path(src.path), obj) if allow_bare else None)
        if kind not in KINDS:
            return None, "not a roo-bench result (no `schema` field and no known key set)"
        rec = _from_legacy(obj, kind)
    if rec["status"] not in STATUSES:
        return None, f"unknown status {rec['status']!r} (expected ok, oom or error)"
    if rec["kind"] == "point" and rec["status"] == "ok":
        lay = rec["metrics"].get("layouts")
        if not isinstance(lay, dict) or not all(isinstance(lay.get(x), dict) for x in LAYOUTS):
            return None, "point record without `metrics.layouts.impression` and `.roo`"
    rec["source"] = src
    rec["device_label"] = device_label(rec)
    return rec, ""


def device_label(rec: dict) -> str:
    """'NVIDIA H100 80GB HBM3 (committed results)' / 'CPU (this run)' — every number says where it
    came from, so a CPU demo and committed GPU results never blur together."""
    prov, cfg, m = rec["provenance"], rec["config"], rec["metrics"]
    name = prov.get("device_name") or m.get("device_name") or ""
    dev = str(cfg.get("device") or "")
    if rec["kind"] in ("model", "project"):
        name = "cost model"  # predictions: no device ran them
    elif not name:
        name = "CUDA device" if dev.startswith("cuda") else "CPU"
    elif name.lower().startswith("cpu"):
        name = "CPU"  # 'cpu', 'cpu (x86_64)': one label, so all CPU results of a run group together
    origin = "committed results" if rec["source"].committed else "this run"
    return f"{name} ({origin})"


def num(x) -> float | None:
    """A finite float or None (tolerates missing, null, strings and NaN)."""
    if isinstance(x, bool) or x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None
