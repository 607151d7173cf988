#!/usr/bin/env bash
# The H100 validation campaign, in stages of at most 10 minutes each:
#   OUT=/some/dir STAGES="calib presets early" bash harness/gpu_campaign.sh
#   OUT=/some/dir STAGES="hstu nvml gpubench" bash harness/gpu_campaign.sh
# Everything lands under $OUT/campaign/ and is packed into one tarball under $OUT, so the results
# travel as a single file. Unpack it into reports/data/<device>/ and commit it.
# The device machine gets the working tree without .git: pass the commit for the provenance,
#   ROO_BENCH_GIT_SHA=$(git rev-parse HEAD) ROO_BENCH_GIT_DIRTY=0 OUT=... bash harness/gpu_campaign.sh
set -uo pipefail
: "${OUT:?set OUT to an output directory}"
STAGES=${STAGES:-"calib presets early hstu nvml gpubench"}  # also: steptests segsum bagpool generator trace production dlrmpresets hstupreset profile kernels (= ktest + kbench) ksweep kncu rabprobe bench
export PYTHONPATH=${PYTHONPATH:-.} PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
D="$OUT/campaign"
mkdir -p "$D"
rb() { python3 -m harness "$@"; }
log() { echo "[$(date +%H:%M:%S)] $*"; }
ktest() {
  timeout 300 python3 -m pytest -q -p no:cacheprovider tests/test_kernels_hstu.py > "$D/test_kernels_hstu_gpu.log" 2>&1
  tail -n 3 "$D/test_kernels_hstu_gpu.log"
}
kbench() {
  timeout 400 python3 -m benchmarks.hstu_kernel --no-autotune \
    --providers "${KERNEL_PROVIDERS:-sdpa_cudnn,sdpa_flash,triton,triton_atomic}" \
    --lengths "${KERNEL_LENGTHS:-256,512,1024,2048,4096}" --out "$D/bench_hstu.json" > "$D/bench_hstu.log" 2>&1
}
ksweep() {
  # KERNEL_VARIANTS: "|"-separated variants, registered names or NAME:key=value;... specs
  # (benchmarks/hstu_kernel.py: VARIANTS, all of them when unset)
  local args=() v
  IFS='|' read -ra vs <<< "${KERNEL_VARIANTS:-}"
  for v in "${vs[@]}"; do [ -n "$v" ] && args+=(--variant "$v"); done
  timeout "${KSWEEP_TIMEOUT:-330}" python3 -m benchmarks.hstu_kernel --sweep --targets 32 \
    --lengths "${KERNEL_LENGTHS:-512,1024,2048,4096}" --dists "${KERNEL_DISTS:-jagged,uniform}" "${args[@]}" \
    --out "$D/sweep_variants.json" > "$D/sweep_variants.log" 2>&1
  grep -c "^sweep L=" "$D/sweep_variants.log"
}
kncu() {
  # Nsight Compute on the attention kernels of one fwd+bwd per NCU_POINTS entry (L:lengths), every
  # section (--set full); clocks left alone (the boost clocks every other stage runs at).
  # details.txt: the sections; raw.csv: every metric.
  # The reports themselves (MBs) stay out of the tarball, in $OUT/ncu-rep/.
  local pt name
  mkdir -p "$D/ncu" "$OUT/ncu-rep"
  for pt in ${NCU_POINTS:-2048:jagged 512:jagged}; do
    name=${pt/:/-}
    timeout "${NCU_TIMEOUT:-200}" ncu --clock-control none --set full --kernel-name regex:_hstu --launch-count 3 \
      -f -o "$OUT/ncu-rep/$name" python3 -m benchmarks.hstu_kernel --once 1 --targets 32 \
      --lengths "${pt%%:*}" --dists "${pt##*:}" > "$D/ncu/$name.log" 2>&1
    ncu --import "$OUT/ncu-rep/$name.ncu-rep" --page details > "$D/ncu/$name.details.txt" 2>&1
    ncu --import "$OUT/ncu-rep/$name.ncu-rep" --page raw --csv > "$D/ncu/$name.raw.csv" 2>&1
    tail -n 2 "$D/ncu/$name.log"
  done
}
hstu4096() {
  # roo-bench bench arguments: hstu-ranking with the Triton attention, 2 requests of L = 4096 history
  # events and $1 impressions each (the rabprobe stage)
  echo "--preset hstu-ranking --device cuda --dtype bf16 --set attention_backend=triton --set max_history_len=0
    --set impressions.kind=fixed --set impressions.value=$1 --set history.length.kind=fixed
    --set history.length.value=4096 --set history.length.max=4096 --set requests_per_batch=2 --json"
}
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv > "$D/nvidia-smi.csv" 2>&1

for s in $STAGES; do
  t0=$(date +%s)
  case $s in
    calib)    log "calibrate"; rb calibrate --device cuda --json > "$D/calibration.json" ;;
    presets)  log "all presets, both layouts, bf16"
              rb sweep harness/sweeps/all-presets.toml --out "$D/presets" --resume --json ;;
    dlrmpresets) log "the presets without attention, both layouts, bf16"
              rb sweep harness/sweeps/dlrm-presets.toml --out "$D/dlrm-presets" --resume --json ;;
    hstupreset) log "hstu-ranking at its preset shape, both layouts, bf16"
              rb sweep harness/sweeps/hstu-preset.toml --out "$D/hstu-preset" --resume --json ;;
    early)    log "early-ranking k x L"
              # RESUME_FROM=DIR: continue an earlier call's sweep (its results.jsonl + sweep.meta.json)
              if [ -n "${RESUME_FROM:-}" ] && [ ! -e "$D/early-kxL" ]; then cp -r "$RESUME_FROM" "$D/early-kxL"; fi
              rb sweep harness/sweeps/h100-campaign-early.toml --out "$D/early-kxL" --resume --json ;;
    production) log "production shapes: every preset, then the early-ranking and hstu-ranking k x L grids"
              # PRODUCTION_SWEEPS: a subset of the three; RESUME_FROM=DIR: an earlier call's $D, whose
              # sweep folders of the same names are continued (--resume), e.g. after a 10-minute limit
              for sw in ${PRODUCTION_SWEEPS:-h100-production h100-kxl-early h100-kxl-hstu}; do
                if [ -n "${RESUME_FROM:-}" ] && [ ! -e "$D/$sw" ] && [ -e "$RESUME_FROM/$sw" ]; then
                  cp -r "$RESUME_FROM/$sw" "$D/$sw"
                fi
                rb sweep "harness/sweeps/$sw.toml" --out "$D/$sw" --resume --json
              done ;;
    hstu)     log "hstu-ranking k x L (triton attention)"
              rb sweep harness/sweeps/h100-campaign-hstu.toml --out "$D/hstu-kxL" --resume --json ;;
    nvml)     log "NVML sampler perturbation"
              python3 -m harness.nvml_perturbation --device cuda --json --out "$D/nvml_perturbation.jsonl" ;;
    bench)    log "roo-bench bench (issue 3 acceptance)"
              for p in early-ranking hstu-ranking; do
                rb bench --preset "$p" --layout both --device cuda --dtype bf16 --steps 20 --json > "$D/bench-$p.json"
              done ;;
    profile)  log "torch.profiler: where the step time goes"
              for p in ${PROFILE_PRESETS:-early-ranking hstu-ranking}; do
                # the Triton attention, as the sweeps run hstu-ranking (models without attention ignore it)
                timeout 300 python3 -m harness profile --preset "$p" --layout both --device cuda --dtype bf16 \
                  --steps 5 --warmup 3 --set attention_backend=triton --json > "$D/profile-$p.json"
              done ;;
    kernels)  log "HSTU attention kernel: GPU correctness tests, then the benchmark table"; ktest; kbench ;;
    ktest)    log "HSTU attention kernel: GPU correctness tests"; ktest ;;
    kbench)   log "HSTU attention kernel: the benchmark table (KERNEL_PROVIDERS, KERNEL_LENGTHS)"; kbench ;;
    ksweep)   log "HSTU attention kernel: variant sweep (KERNEL_VARIANTS, KERNEL_LENGTHS, KERNEL_DISTS)"; ksweep ;;
    kncu)     log "HSTU attention kernel: Nsight Compute counters (NCU_POINTS)"; kncu ;;
    rabprobe) log "hstu-ranking ROO step at k=1, L=4096: relative attention bias off, then on"
              # what the relative-attention-bias gradient costs a step (docs/notebook/perf.md), with the
              # kernel's default options (the model step takes no kernel options from the environment)
              S="$(hstu4096 1) --layout roo --steps 10 --warmup 3"
              mkdir -p "$D/rab"
              rb bench $S --set rab=false > "$D/rab/off.json"
              rb bench $S --set rab=true > "$D/rab/on.json" ;;
    steptests) log "GPU tests of the training step, the gradient reduction, the generator, the calibration"
              timeout "${TEST_TIMEOUT:-240}" python3 -m pytest -q -p no:cacheprovider -m gpu $(ls tests/test_segment_sum.py tests/test_bag_pool.py \
                tests/test_sync_free.py tests/test_rowwise_adagrad.py tests/test_embeddings_fused.py \
                tests/test_generator_torch.py tests/test_time_model.py tests/test_graph_step.py tests/test_expansion.py tests/test_time_model_host.py 2>/dev/null) > "$D/gpu_tests.log" 2>&1
              tail -n 3 "$D/gpu_tests.log" ;;
    segsum)   log "the embedding gradient reduction: index_add_ vs the segment-sum kernel"
              timeout 120 python3 -m benchmarks.segment_sum --out "$D/segment_sum.json" > "$D/segment_sum.log" 2>&1
              tail -n 12 "$D/segment_sum.log" ;;
    bagpool)  log "the pooled embedding-bag forward: ATen's embedding_bag vs the Triton kernel, configs swept"
              timeout 150 python3 -m benchmarks.bag_pool --configs sweep --json "$D/bag_pool.json" > "$D/bag_pool.log" 2>&1
              tail -n 30 "$D/bag_pool.log" ;;
    generator) log "the on-device generator"
              timeout 150 python3 -m benchmarks.generator --device cuda --out "$D/generator.json" > "$D/generator.log" 2>&1
              tail -n 20 "$D/generator.log" ;;
    trace)    log "Chrome traces of early-ranking's profiled steps: which range each kernel falls under"
              mkdir -p "$D/trace"
              timeout 240 python3 -m harness profile --preset early-ranking --layout both --device cuda --dtype bf16 \
                --steps 2 --warmup 3 --trace-dir "$D/trace" --json > "$D/trace/profile.json"
              gzip -9f "$D/trace"/trace-*.json ;;
    gpubench) log "asv GPU track_ benchmarks run directly"
              python3 -m benchmarks.gpu --json ${GPUBENCH_ONLY:+--only "$GPUBENCH_ONLY"} > "$D/asv-gpu.json" 2> "$D/asv-gpu.log" ;;
    *) echo "unknown stage $s" >&2; false ;;
  esac
  rc=$?
  log "stage $s done in $(( $(date +%s) - t0 )) s (rc=$rc)"
  # packed after every stage, so a call stopped at its time limit still brings back what finished
  tar -czf "$OUT/campaign-$(echo "$STAGES" | tr ' ' '-').tar.gz" -C "$OUT" campaign
done
log "packed $(du -sh "$D" | cut -f1)"
