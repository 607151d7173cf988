#!/usr/bin/env bash
# Run the asv suite on past commits of main and publish the site (.asv/html).
#
#   benchmarks/seed_history.sh                 # the last 5 commits of main
#   benchmarks/seed_history.sh -n 10           # the last 10
#   benchmarks/seed_history.sh SHA1 SHA2 ...   # these commits (make bench-compare uses this)
#   options: --no-publish   --quick (one sample per benchmark: a smoke run, not a history)
#   env: ASV (default .venv/bin/asv, else asv on PATH), ASV_MACHINE (default: short hostname),
#        ASV_BENCH (regex: only matching benchmarks), ASV_RUN_ARGS (more `asv run` arguments,
#        e.g. "-a repeat=3" to shorten a run)
#
# How, and why this way (asv 0.6.6 with environment_type "existing" cannot check out and build
# commits itself):
# - each commit is checked out in a temporary `git worktree` and put first on the benchmark
#   processes' sys.path through ASV_PYTHONPATH (asv drops PYTHONPATH), so its roo_ref, workloads
#   and harness are the code measured — an editable install of the main checkout is shadowed;
# - the benchmarks themselves come from this checkout's benchmarks/ (asv imports the `benchmarks`
#   package from benchmark_dir), exactly as `asv run A..B` and `asv continuous` do: every commit is
#   measured by the same suite, so its points share benchmark versions and line up in one graph;
# - results are saved under the commit's own hash (`--set-commit-hash`) in this checkout's
#   .asv/results, next to `make bench`'s, and `asv publish` renders them all;
# - a commit from before the project had a benchmark suite (no benchmarks/ in its tree) is
#   skipped with a message; a benchmark that raises at some commit (e.g. an API that did not exist
#   yet) is recorded as failed there — a gap in its graph — and the run goes on.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
if [ -z "${ASV:-}" ]; then
  if [ -x "$ROOT/.venv/bin/asv" ]; then ASV="$ROOT/.venv/bin/asv"; else ASV=asv; fi
fi
MACHINE=${ASV_MACHINE:-$(hostname -s 2>/dev/null || hostname)}
N=5
PUBLISH=1
QUICK=()
COMMITS=()
while [ $# -gt 0 ]; do
  case "$1" in
    -n) N=$2; shift 2 ;;
    --no-publish) PUBLISH=0; shift ;;
    --quick) QUICK=(--quick); shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    -*) echo "seed_history.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) COMMITS+=("$1"); shift ;;
  esac
done
if [ ${#COMMITS[@]} -eq 0 ]; then
  # oldest first: each `asv run` rewrites results/benchmarks.json, the last one should be HEAD's
  mapfile -t COMMITS < <(git rev-list --first-parent --max-count="$N" --reverse main)
fi

# the asv machine file ($HOME/.asv-machine.json) must name this machine before `asv run --machine`
if ! grep -qs "\"$MACHINE\"" "$HOME/.asv-machine.json"; then
  "$ASV" machine --machine "$MACHINE" --yes >/dev/null
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/roo-asv-seed.XXXXXX")
cleanup() {
  for wt in "$tmp"/wt-*; do
    [ -d "$wt" ] && git worktree remove --force "$wt" >/dev/null 2>&1
  done
  git worktree prune
  rm -rf "$tmp"
}
trap cleanup EXIT

ran=0; skipped=0; with_failures=0
for c in "${COMMITS[@]}"; do
  sha=$(git rev-parse --verify --quiet "$c^{commit}") || { echo "seed_history.sh: no such commit: $c" >&2; exit 2; }
  short=${sha:0:8}
  if ! git cat-file -e "$sha:benchmarks" 2>/dev/null; then
    echo "== $short: no benchmarks/ in this commit (older than the suite): skipped"
    skipped=$((skipped + 1))
    continue
  fi
  wt="$tmp/wt-$short"
  git worktree add --detach --quiet "$wt" "$sha"
  echo "== $short $(git log -1 --format=%s "$sha" | cut -c1-70)"
  t0=$(date +%s)
  set +e
  ASV_PYTHONPATH="$wt" "$ASV" run --python=same --machine "$MACHINE" --set-commit-hash="$sha" \
    "${QUICK[@]}" ${ASV_BENCH:+--bench "$ASV_BENCH"} ${ASV_RUN_ARGS:-}
  rc=$?
  set -e
  echo "== $short: asv run exit status $rc in $(( $(date +%s) - t0 )) s"
  [ "$rc" -ne 0 ] && with_failures=$((with_failures + 1))
  git worktree remove --force "$wt"
  ran=$((ran + 1))
done
echo "== ran $ran commit(s) ($with_failures with failed benchmarks), skipped $skipped without a suite"
if [ "$PUBLISH" = 1 ] && [ "$ran" -gt 0 ]; then
  "$ASV" publish
  echo "== site: $ROOT/.asv/html/index.html  (serve it: $ASV preview)"
fi
