"""Benchmark: jagged HSTU attention, Triton kernel vs torch reference vs padded SDPA (tritonbench style).

Not an asv suite (it defines no time_*/track_* benchmarks): a command for a GPU machine. Importing
its modules needs neither CUDA nor triton; torch and the kernels are imported by the functions that
run them. Modules: inputs (batches, FLOP rule, timing), providers (the provider table), variants
(the options sweep, the single run for a profiler), cli (the command line; __main__ runs it).

Providers x inputs (PROVIDERS); each cell is the CUDA-event median of triton.testing.do_bench:
  torch_ref      roo_ref.attention.hstu_attention_torch (padded explicit matmuls, target-aware mask)
  sdpa_cudnn     F.scaled_dot_product_attention, cuDNN backend, softmax, padded dense [B, H, L, D], causal
  sdpa_flash     same, flash backend
  triton         roo_ref.kernels.hstu_attention, its defaults (dq by fp32 atomics in the dk/dv kernel
                 at L >= 2048, by its own kernel below)
  triton_atomic  same, dq by atomics at every L
  triton_nocheck triton as the HSTU model calls it: check_values=False, no device->host sync per call
Inputs: bf16, H heads, head dim D, ~131k tokens per batch; L x targets x {uniform: all L,
jagged: lengths uniform in [L/2, L]}. SDPA runs on the padded [B, L] batch with a plain causal mask
(it has no target-aware mask) and without the jagged<->padded copies: a lower bound on its cost.

FLOPs (mask-aware, the same count for every provider): per head and allowed (i, j) pair of the
HSTU mask, 2*d_qk (q k^T) + 2*d_v (A v) forward; backward = 2.5x forward; fwd+bwd = 3.5x.
Allowed pairs of a sequence with n tokens, nt targets, h = n - nt: h(h+1)/2 + nt*h + nt.
Also measured in the same run: an 8192^3 bf16 matmul (random data), TFLOP/s = 2*8192^3 / t.
For the Triton providers, also the GPU-only time per forward and per backward from torch.profiler's
GPU timeline (the HSTU kernels alone, and all GPU work of the call): the gap between a call's
event time and its GPU time is host-side (checks, argument handling, launches).

Kernel options: the Triton providers run HstuKernelOptions.from_env(os.environ) (ROO_HSTU_*; the
defaults when none is set), autotuned unless --no-autotune. --sweep times named variants (VARIANTS,
or NAME:key=value;... specs), each an options object; nothing in the kernel module is patched.

  PYTHONPATH=. python -m benchmarks.hstu_kernel --out bench.json
  PYTHONPATH=. python -m benchmarks.hstu_kernel --sweep --variant dq-kernel --variant 'a:bwd=64,64,4,2'
"""
