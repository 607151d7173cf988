#!/usr/bin/env bash
# The embedding all-to-all campaign on a multi-GPU host (NCCL): early-ranking, retrieval and
# hstu-ranking (its history exchanged as a sequence of the last HSTU_HISTORY events), both layouts
# (every run measures both), table- and row-wise sharding, W=2, 4 and 8 as far as the visible GPUs
# allow. Run from the repository root:
#
#   OUT=/some/dir PYTHONPATH=. bash harness/comm_gpu_campaign.sh
#
# Writes under $OUT: comm.jsonl (one result record per run, kind "comm"), one `roo-bench comm --json`
# summary per run (comm_<preset>_<sharding>_w<W>.json, its stderr beside it) and comm_summary.md.
# Knobs (environment): WS="2 4 8", PRESETS, HSTU_HISTORY (256, hstu-ranking's model), SHARDINGS,
# STEPS (50), WARMUP (5), REQUESTS (per rank; default the preset's batch), DIM (128), ROW_CAP (65536), COMM_DTYPE (fp32), RUN_TIMEOUT (s, 540).
# A failed run is reported and the campaign goes on; the exit code is 1 if any run failed.
set -u -o pipefail

export NCCL_NVLS_ENABLE=0 # NVLink multicast off: it can take a shared host's GPUs down
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
OUT=${OUT:-./comm_out}
mkdir -p "$OUT"

DEVICE=${DEVICE:-cuda} # DEVICE=cpu: a gloo dry run of this script (2 ranks, small settings)
if ! NGPU=$("$PY" -c "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)"); then
    echo "comm_gpu_campaign: $PY cannot import torch" >&2
    exit 2
fi
if [ "$DEVICE" = cpu ]; then
    NGPU=2 # ranks, not GPUs
elif [ "$NGPU" -lt 2 ]; then
    echo "comm_gpu_campaign: needs >= 2 visible CUDA GPUs, found $NGPU" >&2
    exit 2
fi
if [ -z "${WS:-}" ]; then
    WS="2"
    if [ "$NGPU" -ge 4 ]; then WS="$WS 4"; fi
    if [ "$NGPU" -ge 8 ]; then WS="$WS 8"; fi
fi
PRESETS=${PRESETS:-"early-ranking retrieval hstu-ranking"}
HSTU_HISTORY=${HSTU_HISTORY:-256}
SHARDINGS=${SHARDINGS:-"table row"}
STEPS=${STEPS:-50}
WARMUP=${WARMUP:-5}
DIM=${DIM:-128}
ROW_CAP=${ROW_CAP:-65536}
COMM_DTYPE=${COMM_DTYPE:-fp32}
RUN_TIMEOUT=${RUN_TIMEOUT:-540}
REQ_ARGS=()
[ -n "${REQUESTS:-}" ] && REQ_ARGS=(--requests "$REQUESTS")

echo "comm_gpu_campaign: $NGPU GPUs; W in {$WS}; presets {$PRESETS}; shardings {$SHARDINGS}; out $OUT"
"$PY" -c "import torch, sys; print('torch', torch.__version__, 'python', sys.version.split()[0], \
*(('nccl', torch.cuda.nccl.version(), torch.cuda.get_device_name(0)) if torch.cuda.is_available() else ()))"

failed=0
for W in $WS; do
    if [ "$W" -gt "$NGPU" ]; then
        echo "skip W=$W: only $NGPU GPUs"
        continue
    fi
    for preset in $PRESETS; do
        for sharding in $SHARDINGS; do
            name="comm_${preset}_${sharding}_w${W}"
            HIST_ARGS=()
            [ "$preset" = hstu-ranking ] && HIST_ARGS=(--max-history "$HSTU_HISTORY")
            echo "== $name"
            t0=$(date +%s)
            if "$PY" -m harness comm --nproc "$W" --preset "$preset" --device "$DEVICE" --sharding "$sharding" \
                --steps "$STEPS" --warmup "$WARMUP" --embedding-dim "$DIM" --row-cap "$ROW_CAP" \
                --comm-dtype "$COMM_DTYPE" "${REQ_ARGS[@]}" "${HIST_ARGS[@]}" --timeout "$RUN_TIMEOUT" \
                --json --out "$OUT/comm.jsonl" >"$OUT/$name.json" 2>"$OUT/$name.stderr"; then
                echo "   ok in $(($(date +%s) - t0)) s"
            else
                echo "   FAILED ($(tail -n 1 "$OUT/$name.stderr"))"
                failed=1
            fi
        done
    done
done

"$PY" - "$OUT" <<'EOF'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
rows = ["| preset | W | sharding | layout | MB/step handed (analytic) | MB/step crossing | step ms | comm ms "
        "| busbw GB/s | predicted comm ms | ROO byte saving | ROO step saving | match | emb equal |",
        "|" + "---|" * 14]
for f in sorted(out.glob("comm_*_w*.json")):
    try:
        s = json.loads(f.read_text())
    except ValueError:
        continue
    if "metrics" in s:  # a `--json` record: its config and metrics, flat
        s = {**s["config"], **s["metrics"]}
    for lay, L in s["layouts"].items():
        bw, pred = L["bus_bw_gbps"], L["predicted_comm_ms"]
        rows.append(
            f"| {s['preset']} | {s['world_size']} | {s['sharding']} | {lay} | "
            f"{L['counted_bytes_per_step'] / 1e6:.2f} ({L['analytic_bytes_per_step'] / 1e6:.2f}) | "
            f"{L['cross_bytes_per_step'] / 1e6:.2f} | {L['step_ms_median']:.3f} | {L['comm_ms_median']:.3f} | "
            f"{'-' if bw is None else f'{bw:.3g}'} | {'-' if pred is None else f'{pred:.3f}'} | "
            f"{100 * s['saving']:.1f}% | {100 * (s['saving_step_ms'] or 0):.1f}% | {s['bytes_match']} | "
            f"{s['embeddings_equal']} |")
(out / "comm_summary.md").write_text("\n".join(rows) + "\n")
print("\n".join(rows))
EOF
exit $failed
