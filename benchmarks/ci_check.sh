#!/usr/bin/env bash
# CI gate for the asv suite: `asv check` (discovery, call signatures) plus a --quick run (every
# benchmark once) that FAILS if any benchmark raised.
#
#   benchmarks/ci_check.sh                  # from anywhere; uses `asv` and `python3` on PATH
#   ASV=.venv/bin/asv PYTHON=.venv/bin/python benchmarks/ci_check.sh
#   ASV_CI_BENCH='^models\.' benchmarks/ci_check.sh      # only the benchmarks matching a regex
#   ASV_CI_KEEP=1 ...                   # keep the temp dir (results JSON, run.log) for inspection
#
# Why not trust asv's exit status alone: asv 0.6.6 returns 2 when a benchmark's process exits
# non-zero, but a failed setup_cache or a suite that partly failed to import can still leave it at 0
# (the benchmarks are recorded as None). So we also read the results JSON: a benchmark whose value
# (or one of whose parameter combinations) is null failed; skipped ones (NotImplementedError in
# setup, e.g. GPU benchmarks here) are NaN and pass. The log's "failed" lines are reported too.
#
# The run is isolated: a temporary copy of asv.conf.json sends results, html and the machine file
# ($HOME/.asv-machine.json) to a temp dir, so quick-run numbers never reach .asv/results (the
# published history) and the user's asv machine file is left alone.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
ASV=${ASV:-asv}
PYTHON=${PYTHON:-python3}
BENCH=${ASV_CI_BENCH:-}
MACHINE=ci-quick

tmp=$(mktemp -d "${TMPDIR:-/tmp}/roo-asv-ci.XXXXXX")
[ -n "${ASV_CI_KEEP:-}" ] && echo "== keeping $tmp" || trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/home"

"$PYTHON" - "$ROOT" "$tmp" <<'EOF'
import json, re, sys
root, tmp = sys.argv[1], sys.argv[2]
text = open(f"{root}/asv.conf.json").read()
conf = json.loads(re.sub(r"^\s*//.*$", "", text, flags=re.M))  # asv allows // comment lines
conf.update(repo=root, benchmark_dir=f"{root}/{conf.get('benchmark_dir', 'benchmarks')}",
            results_dir=f"{tmp}/results", html_dir=f"{tmp}/html", env_dir=f"{tmp}/env")
json.dump(conf, open(f"{tmp}/asv.conf.json", "w"), indent=1)
EOF

sha=$(git rev-parse HEAD)
# ASV_PYTHONPATH: asv drops PYTHONPATH but puts this on the benchmark processes' sys.path, so the
# checkout's own packages are measured even where roo-bench is not pip-installed (asv imports the
# `benchmarks` package from benchmark_dir itself).
asv_() { HOME="$tmp/home" ASV_PYTHONPATH="$ROOT" "$ASV" --config "$tmp/asv.conf.json" "$@"; }

t0=$(date +%s)
echo "== asv check --python=same"
asv_ check --python=same
asv_ machine --machine "$MACHINE" --yes >/dev/null
echo "== asv run --python=same --quick (commit ${sha:0:8})"
set +e
# forkserver: the suite (torch included) is imported once and each benchmark runs in a fork
asv_ run --python=same --quick --show-stderr --launch-method forkserver --machine "$MACHINE" --set-commit-hash="$sha" \
  ${BENCH:+--bench "$BENCH"} 2>&1 | tee "$tmp/run.log"
rc=${PIPESTATUS[0]}
set -e

"$PYTHON" - "$tmp" "$rc" <<'EOF'
import glob, itertools, json, math, os, re, sys

tmp, rc = sys.argv[1], int(sys.argv[2])
problems = []
files = [f for f in glob.glob(f"{tmp}/results/*/*.json") if os.path.basename(f) != "machine.json"]
if not files:
    problems.append("no results file was written")
results = {}
for f in files:
    d = json.load(open(f))
    cols = d.get("result_columns", ["result"])
    for name, row in d.get("results", {}).items():
        results[name] = dict(zip(cols, row))
n_ok = n_skip = 0
for name, r in sorted(results.items()):
    v = r.get("result")
    vals = v if isinstance(v, list) else [v]
    # asv stores a failed benchmark (or parameter combination) as null, a skipped one as NaN
    bad = [i for i, x in enumerate(vals) if x is None]
    nan = sum(1 for x in vals if isinstance(x, float) and math.isnan(x))
    n_skip += nan
    n_ok += len(vals) - nan - len(bad)
    if bad:
        params = r.get("params") or []
        combos = list(itertools.product(*params)) if params else []
        which = [combos[i] for i in bad if i < len(combos)]
        problems.append(f"{name} failed" + (f" for params {which}" if which else ""))
log = open(f"{tmp}/run.log", errors="replace").read()
for line in log.splitlines():
    # asv's per-benchmark status lines ("[ 50%] ··· name   failed", "1/3 failed")
    if "\u00b7\u00b7\u00b7" in line and re.search(r"\bfailed\b", line):
        problems.append("log: " + re.sub(r"\s+", " ", line.strip()))
if "benchmark suite import failed" in log:
    problems.append("log: benchmark suite import failed")
if rc != 0:
    problems.append(f"asv run exited with status {rc}")
print(f"== {len(results)} benchmarks recorded: {n_ok} values, {n_skip} skipped")
if problems:
    print("== FAILED: a benchmark raised (tracebacks above)", file=sys.stderr)
    for p in dict.fromkeys(problems):
        print("  " + p, file=sys.stderr)
    sys.exit(1)
EOF
echo "== asv CI check passed in $(( $(date +%s) - t0 )) s"
