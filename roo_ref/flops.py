"""FLOP accounting: `count_flops(model, batch, layout, backward=True)` with a per-module breakdown.

Counts use torch.utils.flop_counter's per-op formulas (the ones FlopCounterMode uses: matmuls,
convolutions, SDPA), so `total` equals FlopCounterMode's total — a test checks that. The HSTU
attention's torch reference is explicit (padded) matmuls, so it is counted, *including the masked
and padded work* (flops_masked_counted=True); the triton backend launches kernels the counter
does not see.

Why not FlopCounterMode's own per-module table: its ModuleTracker attributes backward ops by
module-level grad hooks, which puts e.g. a Linear's weight-gradient matmul on whatever embedding
module's backward is "active" at that moment. Here each autograd node is tagged with the module
that created it in forward, and its backward ops are attributed to that module exactly.

`by_module` keys are dotted module paths relative to the model ("" = the whole model), inclusive
of submodules, e.g. "user_arch", "user_arch.0", "interaction", "hstu.layers.0.uvqk",
"hstu.layers.0.attention". Forward/backward splits are in `by_module_forward` / `by_module_backward`.
"""

from __future__ import annotations

from collections import defaultdict

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import flop_registry


class _State:
    def __init__(self) -> None:
        self.stack: list[str] = [""]
        self.backward_path: str | None = None
        self.phase = "forward"
        self.counts: dict[str, dict[str, int]] = {"forward": defaultdict(int), "backward": defaultdict(int)}
        self.by_op: dict[str, int] = defaultdict(int)
        self.tagged: set[int] = set()
        self.handles: list = []

    def path(self) -> str:
        if self.phase == "backward":
            return self.backward_path if self.backward_path is not None else ""
        return self.stack[-1]

    def add(self, op: str, flops: int) -> None:
        path = self.path()
        self.by_op[op] += flops
        parts = path.split(".") if path else []
        bucket = self.counts[self.phase]
        bucket[""] += flops
        for i in range(1, len(parts) + 1):
            bucket[".".join(parts[:i])] += flops

    def tag(self, node, path: str) -> None:
        """Tag `node` and the untagged nodes behind it (created by the same call) with `path`."""
        todo = [node]
        while todo:
            n = todo.pop()
            if n is None or id(n) in self.tagged:
                continue
            self.tagged.add(id(n))
            self.handles.append(n.register_prehook(self._enter(path)))
            self.handles.append(n.register_hook(self._leave()))
            todo.extend(nxt for nxt, _ in n.next_functions)

    def _enter(self, path: str):
        def hook(grad_outputs):
            self.backward_path = path

        return hook

    def _leave(self):
        def hook(grad_inputs, grad_outputs):
            self.backward_path = None

        return hook


class _TagNodes(TorchFunctionMode):
    def __init__(self, state: _State):
        super().__init__()
        self.state = state

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if self.state.phase == "forward":
            for t in tree_leaves(out):
                if isinstance(t, torch.Tensor) and t.grad_fn is not None:
                    self.state.tag(t.grad_fn, self.state.stack[-1])
        return out


class _Count(TorchDispatchMode):
    def __init__(self, state: _State):
        super().__init__()
        self.state = state

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        packet = func._overloadpacket
        if packet in flop_registry:
            self.state.add(str(packet), int(flop_registry[packet](*args, **kwargs, out_val=out)))
        return out


def count_flops(model: torch.nn.Module, batch, layout: str, backward: bool = True) -> dict:
    """Run one forward (+ backward of the loss) and count FLOPs per module.

    Returns {"total", "forward", "backward", "by_module", "by_module_forward", "by_module_backward",
    "by_op", "flops_masked_counted"}. Gradients produced here are left on the parameters (call
    zero_grad before training on)."""
    st = _State()
    hooks = []

    def pre(name):
        def hook(module, args):
            st.stack.append(name)

        return hook

    def post(module, args, output):
        st.stack.pop()  # returns None: a forward hook's return value would replace the output

    for name, mod in model.named_modules():
        hooks.append(mod.register_forward_pre_hook(pre(name)))
        hooks.append(mod.register_forward_hook(post))
    try:
        with _Count(st), _TagNodes(st):
            loss = model(batch, layout)["loss"]
            if backward:
                st.phase = "backward"
                loss.backward()
    finally:
        for h in hooks + st.handles:
            h.remove()
    fwd, bwd = dict(st.counts["forward"]), dict(st.counts["backward"])
    keys = sorted(set(fwd) | set(bwd))
    return {
        "total": fwd.get("", 0) + bwd.get("", 0),
        "forward": fwd.get("", 0),
        "backward": bwd.get("", 0),
        "by_module": {k: fwd.get(k, 0) + bwd.get(k, 0) for k in keys},
        "by_module_forward": {k: fwd.get(k, 0) for k in keys},
        "by_module_backward": {k: bwd.get(k, 0) for k in keys},
        "by_op": dict(st.by_op),
        "flops_masked_counted": True,
    }
