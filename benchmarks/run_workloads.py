"""Run benchmarks/workloads.py without asv and print every number: `python -m benchmarks.run_workloads`.

Options: `--only NAME` (class name substring, repeatable), `--preset NAME` (restrict preset params),
`--json` (one JSON object). The targets, on one core:
  taskset -c 1 python -m benchmarks.run_workloads --only Generator   # >= 1M impressions/s (early-ranking, cpu)
  taskset -c 1 python -m benchmarks.run_workloads --only Convert     # time ratio <= 2, RSS ratio <= 3"""

from __future__ import annotations

import argparse
import inspect
import itertools
import json
import sys
import time

from benchmarks import workloads as W


def _param_sets(cls):
    params = getattr(cls, "params", None)
    if not params:
        return [()]
    if not isinstance(params, tuple):  # asv: a list of values for one parameter, or a list of lists
        params = tuple(params) if params and isinstance(params[0], list) else (params,)
    return list(itertools.product(*params))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.run_workloads")
    ap.add_argument("--only", action="append", default=[])
    ap.add_argument("--preset", action="append", default=[])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    results = []
    for name, cls in inspect.getmembers(W, inspect.isclass):
        if cls.__module__ != W.__name__ or (args.only and not any(o in name for o in args.only)):
            continue
        for ps in _param_sets(cls):
            if args.preset and not any(p in ps for p in args.preset) and any(p in W.PRESET_NAMES for p in ps):
                continue
            obj = cls()
            try:
                obj.setup(*ps)
            except NotImplementedError as e:
                results.append({"benchmark": name, "params": list(ps), "skipped": str(e)})
                continue
            try:
                for m in sorted(dir(obj)):
                    fn = getattr(obj, m)
                    if m.startswith("track_"):
                        v = fn(*ps)
                        results.append(
                            {
                                "benchmark": f"{name}.{m}",
                                "params": list(ps),
                                "value": v,
                                "unit": getattr(fn, "unit", ""),
                            }
                        )
                    elif m.startswith("time_"):
                        best = float("inf")
                        for _ in range(3):
                            t0 = time.perf_counter()
                            fn(*ps)
                            best = min(best, time.perf_counter() - t0)
                        results.append({"benchmark": f"{name}.{m}", "params": list(ps), "value": best, "unit": "s"})
                    else:
                        continue
                    r = results[-1]
                    if not args.json:
                        print(
                            f"{r['benchmark']:<55} {','.join(map(str, ps)):<32} {r['value']:>14.4g} {r['unit']}",
                            flush=True,
                        )
            finally:
                if hasattr(obj, "teardown"):
                    obj.teardown(*ps)
    if args.json:
        print(json.dumps({"results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
