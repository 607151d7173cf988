"""Data commands: `presets`, `generate`, `convert`, `storage`, `fit` (see workloads/).

`--json` prints one result record (workloads.records) of kind presets, generate, convert, storage or
fit; docs/contracts.md says which of the flat keys are its config and which its metrics.
`generate_dataset` and `measure_dataset` are what `generate` and `storage --data` run, for the demo.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from harness.commands.analyze import add_role_arguments, role_options
from workloads.errors import UserError
from workloads.layout import LAYOUT_CHOICES, Layout, parse_layouts
from workloads.records import Kind, emit, emit_flat


def register(sub) -> None:
    p = sub.add_parser(
        "presets",
        help="list the workload presets: shape per GPU step, model, public sources",
        description="Without NAME: one line per preset. With NAME (a preset, or NAME@SCALE: that preset "
        "with requests per step and table rows multiplied by SCALE): its shape, model and sources.",
    )
    p.add_argument("name", nargs="?", default=None, help="one preset (or NAME@SCALE) in detail")
    p.add_argument("--scale", type=float, default=None, help="show every preset as NAME@SCALE (0 < SCALE <= 1)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_presets)

    p = sub.add_parser("generate", help="generate a synthetic dataset (Parquet) from a preset or spec")
    _spec_args(p)
    p.add_argument("--requests", type=int, default=4096, help="number of requests (default 4096)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: the spec's seed)")
    p.add_argument("--out", required=True, help="output directory (must not exist)")
    p.add_argument("--layout", default="both", help="roo (or request) | impression | both (default both)")
    p.add_argument(
        "--order",
        default="grouped",
        help="impression row order: grouped (a request's rows adjacent) | shuffled (every impression of the "
        "dataset in one seeded random order, an external shuffle through temp files; the bytes do not "
        "depend on --chunk-requests) (default grouped)",
    )
    p.add_argument("--codec", default="zstd", help="none | snappy | zstd (default zstd)")
    p.add_argument("--row-group-size", type=int, default=None, help="rows per Parquet row group (default 8192)")
    p.add_argument(
        "--chunk-requests",
        type=int,
        default=4096,
        help="requests generated per streaming chunk (memory only: the output bytes do not depend on it)",
    )
    p.add_argument(
        "--shuffle-memory-mb",
        type=int,
        default=256,
        help="--order shuffled: MiB of rows sorted in memory at once (peak about twice this; default 256)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_generate)

    p = sub.add_parser("convert", help="convert an impression-level Parquet log to request level")
    p.add_argument("input", metavar="IN", help="impression-level Parquet file (or dataset dir)")
    p.add_argument("--request-key", required=True, help="column that identifies the request")
    p.add_argument("--out", required=True, help="output dataset directory (must not exist)")
    p.add_argument("--ro-columns", default="auto", help="auto (constant within every request) or a,b,c")
    p.add_argument("--on-conflict", default="error", help="error | first: an RO column differing within a request")
    p.add_argument("--codec", default="zstd", help="output codec: none | snappy | zstd (default zstd)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_convert)

    p = sub.add_parser("storage", help="bytes, rows and seconds per layout x row order x codec")
    _spec_args(p)
    p.add_argument("--data", default=None, help="measure a dataset dir written by generate/convert instead")
    p.add_argument("--requests", type=int, default=4096, help="requests to generate (default 4096)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: the spec's seed)")
    p.add_argument("--codecs", default="none,snappy,zstd", help="comma list (default none,snappy,zstd)")
    p.add_argument("--row-group-size", type=int, default=None, help="rows per Parquet row group (default 8192)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_storage)

    p = sub.add_parser("fit", help="fit a workload spec (TOML) to a log of any schema")
    p.add_argument(
        "input", metavar="IN", help="Parquet log (impression level, any columns and row order) or dataset dir"
    )
    p.add_argument("--request-key", required=True, help="column that identifies the request")
    add_role_arguments(p)
    p.add_argument("--out", default=None, help="write the spec TOML here (default: print it)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_fit)


def _spec_args(p) -> None:
    p.add_argument("--preset", default=None, help="preset name (see `roo-bench presets`)")
    p.add_argument("--spec", default=None, help="spec file (TOML/JSON), e.g. from `roo-bench fit`")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a spec value by dotted path, e.g. impressions.mean=10 (repeatable)",
    )


def _positive(name: str, v: int | None) -> None:
    if v is not None and v < 1:
        raise UserError(f"--{name}={v} must be >= 1")


def _choice(name: str, v: str, allowed) -> None:
    if v not in allowed:
        raise UserError(f"--{name} {v!r} is not allowed; choose one of: {', '.join(allowed)}")


def _out(kind: Kind, obj: dict, args, text: str) -> None:
    """The command's output: `obj` as a record of `kind` with --json, else `text`."""
    if args.json:
        emit_flat(kind, obj, provenance=_provenance(args))
    else:
        print(text)


def _provenance(args) -> dict:
    """Where and with what a single-run record was made (harness.provenance.collect)."""
    from harness.provenance import collect

    return collect(getattr(args, "seed", None), "cpu")


# --- presets -------------------------------------------------------------------------------------------
def _presets(args) -> int:
    from workloads.presets import PRESETS

    if args.name is not None and args.scale is not None:
        raise UserError("give NAME@SCALE or --scale, not both")
    if args.name is not None:
        names = [args.name]
    else:
        names = list(PRESETS) if args.scale is None else [f"{n}@{args.scale:g}" for n in PRESETS]
    rows = [_preset_row(n) for n in names]
    if args.json:
        emit(Kind.PRESETS, {"name": args.name, "scale": args.scale}, {"presets": rows}, provenance=_provenance(args))
    elif args.name is not None:
        print(_preset_detail(rows[0]))
    else:
        w = max(len(r["name"]) for r in rows)
        for r in rows:
            print(f"{r['name']:<{w}}  {r['description']}  [{_shape_line(r)}]")
    return 0


def _preset_row(name: str) -> dict:
    """One preset's description, step shape, model shape and sources (a bad name: one UserError)."""
    from roo_ref.model_presets import get_model_config
    from workloads.presets import get_preset, preset_sources, shape_summary

    spec = get_preset(name)
    cfg = get_model_config(name)
    cards = [g.cardinality for _, g in spec.user_features() + spec.item_features()]
    cards += [spec.history.item_cardinality, spec.history.action_types]
    rows = sum(max(1, min(c, cfg.max_table_rows)) for c in cards)
    model = {
        "arch": cfg.arch,
        "embedding_dim": cfg.embedding_dim,
        "max_table_rows": cfg.max_table_rows,
        "table_rows": rows,
        "table_bytes_fp32": rows * cfg.embedding_dim * 4,
    }
    return {
        "name": name,
        "description": spec.description,
        "shape": shape_summary(spec),
        "model": model,
        "sources": list(preset_sources(name)),
    }


def _shape_line(r: dict) -> str:
    s, m = r["shape"], r["model"]
    hist = f"history ~{s['history_length_mean']:,.0f}" if s["history_length_mean"] else "no history"
    return (
        f"{s['requests_per_step']:,} requests x ~{s['impressions_per_request']:.1f} = "
        f"~{s['impressions_per_step']:,.0f} impressions/step, {hist}, {m['arch']} dim {m['embedding_dim']}, "
        f"{m['table_rows'] / 1e6:,.2f}M table rows ({m['table_bytes_fp32'] / 1e9:.1f} GB fp32)"
    )


def _preset_detail(r: dict) -> str:
    s = r["shape"]
    lines = [f"{r['name']}: {r['description']}", f"  step: {_shape_line(r)}"]
    lines.append(
        f"  features: {s['user_sparse_features']} request sparse (~{s['user_ids_per_request']:.0f} ids per "
        f"request) + {s['user_dense']} dense; {s['item_sparse_features']} item sparse "
        f"(~{s['item_ids_per_impression']:.0f} ids per impression) + {s['item_dense']} dense; {s['tasks']} task(s)"
    )
    lines.append("  sources:")
    lines += [f"    - {x}" for x in r["sources"]]
    return "\n".join(lines)


# --- generate ------------------------------------------------------------------------------------------
def _progress(total: int, unit: str = "req", desc: str | None = None, min_total: int = 50_000):
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is optional on the GPU machine
        return None
    # disable=None: no bar when stderr is not a terminal; short runs need none either
    return tqdm(total=total, unit=unit, desc=desc, disable=None if total >= min_total else True, file=sys.stderr)


def _generate(args) -> int:
    from workloads.parquet_io import CODECS, ORDERS
    from workloads.presets import resolve_spec

    _choice("layout", args.layout, ("request", *LAYOUT_CHOICES))
    _choice("order", args.order, ORDERS)
    _choice("codec", args.codec, CODECS)
    _positive("requests", args.requests)
    _positive("row-group-size", args.row_group_size)
    _positive("chunk-requests", args.chunk_requests)
    _positive("shuffle-memory-mb", args.shuffle_memory_mb)
    if args.seed is not None and args.seed < 0:
        raise UserError(f"--seed={args.seed} must be >= 0")
    spec = resolve_spec(args.preset, args.spec, args.set)
    seed = spec.seed if args.seed is None else args.seed
    res = generate_dataset(
        spec,
        args.requests,
        seed,
        Path(args.out),
        layouts=parse_layouts(args.layout),
        order=args.order,
        codec=args.codec,
        row_group_size=args.row_group_size,
        chunk_requests=args.chunk_requests,
        progress=True,
        shuffle_memory_bytes=args.shuffle_memory_mb << 20,
    )
    lines = [
        f"{k}: {v['rows']} rows, {v['impressions']} impressions, {v['file_bytes']} bytes -> {v['path']}"
        for k, v in res["datasets"].items()
    ]
    _out(Kind.GENERATE, res, args, "\n".join(lines))
    return 0


def generate_dataset(
    spec,
    requests: int,
    seed: int,
    out: Path,
    layouts=(Layout.IMPRESSION, Layout.ROO),
    order: str = "grouped",
    codec: str = "zstd",
    row_group_size: int | None = None,
    chunk_requests: int = 4096,
    progress: bool = False,
    shuffle_memory_bytes: int | None = None,
) -> dict:
    """Write the datasets of `layouts` (the request-level one first) under `out`, all at once or not at
    all; the flat `generate --json` object (config: out, preset, seed, requests; metrics: datasets)."""
    from workloads.generator import iter_request_batches
    from workloads.parquet_io import DEFAULT_ROW_GROUP, DatasetWriter, commit_temp_dir, make_temp_dir
    from workloads.shuffle import DEFAULT_BUDGET_BYTES
    from workloads.storage import uncompressed_bytes_per_impression

    # the shuffle's bucket count comes from this estimate of the impression level's Arrow bytes
    expected = int(requests * spec.impressions.mean() * uncompressed_bytes_per_impression(spec, Layout.IMPRESSION))
    names = [lay.dataset_name for lay in sorted(layouts, key=lambda lay: lay is not Layout.ROO)]
    root = make_temp_dir(out)
    writers = []
    bar = None
    try:
        for name in names:
            writers.append(
                DatasetWriter(
                    root / name,
                    name,
                    order=order if name == "impression" else "grouped",
                    codec=codec,
                    row_group_size=row_group_size or DEFAULT_ROW_GROUP,
                    spec=spec,
                    seed=seed,
                    extra={"requests_requested": requests},
                    shuffle_memory_bytes=shuffle_memory_bytes or DEFAULT_BUDGET_BYTES,
                    expected_bytes=expected,
                )
            )
        bar = _progress(requests) if progress else None
        for b in iter_request_batches(spec, requests, seed=seed, chunk_requests=chunk_requests):
            for w in writers:
                w.write(b)
            if bar is not None:
                bar.update(b.num_requests)
        manifests = {w.layout: _close(w, progress) for w in writers}
        commit_temp_dir(root, out)
    except BaseException:
        for w in writers:
            w.abort()
        shutil.rmtree(root, ignore_errors=True)
        raise
    finally:
        if bar is not None:
            bar.close()
    return {
        "out": str(out),
        "preset": spec.name,
        "seed": seed,
        "requests": requests,
        "datasets": {
            k: {
                "path": str(out / k),
                "rows": m["rows"],
                "impressions": m["impressions"],
                "file_bytes": m["file_bytes"],
                "order": m["order"],
                "codec": m["codec"],
            }
            for k, m in manifests.items()
        },
    }


def _close(w, progress: bool) -> dict:
    """Close one dataset writer; a shuffled one writes all its rows now, under a bar of its own."""
    bar = _progress(w.impressions, "imp", "shuffle", 500_000) if progress and w.shuffle is not None else None
    try:
        return w.close(bar.update if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()


# --- convert -------------------------------------------------------------------------------------------
def _convert(args) -> int:
    from workloads.convert import CONFLICT_POLICIES, convert
    from workloads.parquet_io import CODECS

    _choice("on-conflict", args.on_conflict, CONFLICT_POLICIES)
    _choice("codec", args.codec, CODECS)
    r = convert(
        args.input,
        args.out,
        args.request_key,
        ro_columns=args.ro_columns,
        on_conflict=args.on_conflict,
        codec=args.codec,
    )
    d = r.to_dict()
    _out(
        Kind.CONVERT,
        d,
        args,
        f"rows in {r.rows_in}, rows out {r.rows_out}, dedup factor {r.dedup_factor:.2f}, "
        f"bytes in {r.bytes_in}, bytes out {r.bytes_out}, conflicts {r.conflicts}"
        + (f" (external sort, {r.partitions} partitions)" if r.external_sort else ""),
    )
    return 0


# --- storage -------------------------------------------------------------------------------------------
def measure_dataset(data: str | Path, codecs: tuple[str, ...], row_group_size: int | None = None) -> dict:
    """`storage --data DIR`: measure a dataset written by generate/convert (its request-level one when
    it has both); the flat `storage --json` object, with `data` naming the dataset measured."""
    from workloads.parquet_io import DEFAULT_ROW_GROUP, dataset_dirs, read_dataset, read_manifest
    from workloads.spec import WorkloadSpec
    from workloads.storage import measure

    dirs = dataset_dirs(data)
    ds = sorted(dirs, key=lambda d: read_manifest(d)["layout"] != "request")[0]
    m = read_manifest(ds)
    if not _roo_bench_columns(ds):  # e.g. `convert`'s output of a log of another pipeline
        from harness.analyze_stages import measure_request_dataset

        if m["layout"] != "request":
            raise UserError(f"{ds} is an impression-level dataset of foreign columns; run `roo-bench analyze` on it")
        return measure_request_dataset(ds, codecs) | {"data": str(ds)}
    b = read_dataset(ds)
    if m["layout"] == "impression":
        b = b.to_requests()
    spec = WorkloadSpec.from_dict(m["spec"]) if m.get("spec") else None
    res = measure(b, spec, codecs=codecs, row_group_size=row_group_size or DEFAULT_ROW_GROUP)
    res.update({"data": str(ds)})
    return res


def _roo_bench_columns(ds: Path) -> bool:
    """The dataset's file has roo-bench's own columns (workloads/parquet_io.py)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from workloads.parquet_io import DATA_FILE, HISTORY_COLS

    try:
        names = pq.read_schema(ds / DATA_FILE).names
    except (OSError, pa.ArrowInvalid):
        return True  # the reader below says what is wrong
    return {"request_id", "item_id", "labels", *HISTORY_COLS} <= set(names)


def _storage(args) -> int:
    from workloads.parquet_io import CODECS, DEFAULT_ROW_GROUP
    from workloads.storage import measure

    codecs = tuple(c.strip() for c in args.codecs.split(",") if c.strip())
    for c in codecs:
        _choice("codecs", c, CODECS)
    _positive("requests", args.requests)
    _positive("row-group-size", args.row_group_size)
    if args.data:
        if args.preset or args.spec:
            raise UserError("give --data DIR or --preset/--spec, not both")
        res = measure_dataset(args.data, codecs, args.row_group_size)
    else:
        from workloads.generator import generate
        from workloads.presets import resolve_spec

        spec = resolve_spec(args.preset, args.spec, args.set)
        seed = spec.seed if args.seed is None else args.seed
        b = generate(spec, args.requests, seed=seed)
        res = measure(b, spec, codecs=codecs, row_group_size=args.row_group_size or DEFAULT_ROW_GROUP)
        res.update({"preset": spec.name, "seed": seed})
    if args.json:
        emit_flat(Kind.STORAGE, res, provenance=_provenance(args))
        return 0
    p = res["predicted_uncompressed_ratio"]
    print(
        f"{res['requests']} requests, {res['impressions']} impressions ({res['impressions_per_request']:.2f}/request)"
    )
    print(
        f"uncompressed impression/request bytes: measured {res['measured_uncompressed_ratio']:.3f}"
        + (f", predicted k(U+I)/(U+kI) {p:.3f}" if p is not None else "")
    )
    print(
        f"{'layout':<11}{'order':<9}{'codec':<7}{'file MB':>9}{'B/imp':>9}{'imps/TB':>10}"
        f"{'write s':>9}{'read s':>8}{'mem MB':>9}"
    )
    for f in res["formats"]:
        print(
            f"{f['layout']:<11}{f['order']:<9}{f['codec']:<7}{f['file_bytes'] / 1e6:>9.2f}"
            f"{f['bytes_per_impression']:>9.0f}{f['samples_per_tb']:>10.3g}{f['write_s']:>9.3f}"
            f"{f['read_s']:>8.3f}{f['memory_bytes'] / 1e6:>9.1f}"
        )
    return 0


# --- fit ---------------------------------------------------------------------------------------------
def _fit(args) -> int:
    import os
    import tempfile

    from workloads.fit_log import fit_log

    out = Path(args.out) if args.out else None
    if out is not None:
        parent = out.parent if str(out.parent) else Path(".")
        if not parent.is_dir() or not os.access(parent, os.W_OK):
            raise UserError(f"cannot write {out}: {parent} is not a writable directory; choose another --out")
    _choice("on-conflict", args.on_conflict, ("error", "first"))
    bars = _stage_bars()
    try:
        res = fit_log(args.input, args.request_key, role_options(args), args.on_conflict, progress=bars)
    finally:
        bars.close()
    spec, report = res.spec, res.report
    text = spec.to_toml()
    if out is not None:
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent if str(out.parent) else ".")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, out)
    if args.json:
        emit_flat(
            Kind.FIT,
            {"spec": spec.to_dict(), "fit": report, "roles": res.roles.to_dict(), "out": str(out) if out else None},
        )
        return 0
    # the mapping goes to stderr when the spec itself is printed, so stdout stays a valid TOML file
    info = sys.stderr if out is None else sys.stdout
    print("column roles (correct them with --ro-columns/--label-columns/--timestamp/--sequence-columns):", file=info)
    for line in res.mapping():
        print(f"  {line}", file=info)
    for note in [*res.roles.notes, *(f"column {d}" for d in report["dropped"])]:
        print(f"note: {note}", file=info)
    if out is None:
        print(text, end="")
        return 0
    d, st = report["data"], report["storage"]
    print(
        f"fitted {d['requests']} requests: impressions/request {report['impressions']['chosen']} "
        f"(mean {d['impressions_per_request']:.2f}), history length {report['history_length']['chosen']} "
        f"(mean {d['history_length_mean']:.1f}); storage ratio log {st['log_uncompressed_ratio']:.3f}, "
        f"spec {st['spec_predicted_ratio']:.3f} -> {out}"
    )
    return 0


def _stage_bars():
    """A tqdm bar per stage of a long command, on stderr (none off a terminal or without tqdm)."""
    from harness.analyze import Bars

    return Bars()
