"""Inline SVG plots (matplotlib, Agg). Text stays text (`svg.fonttype = 'none'`): files stay small,
and the browser draws it with a local font (no font files, no network)."""

from __future__ import annotations

import io
from itertools import count

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import EngFormatter  # noqa: E402

_RC = {
    "svg.fonttype": "none",
    "font.family": "sans-serif",
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.frameon": False,
    "legend.fontsize": 8,
}
LAYOUT_COLORS = {"impression": "#8c8c8c", "roo": "#1f77b4"}
ORDER_COLORS = {"request": "#1f77b4", "grouped": "#ff9f1c", "shuffled": "#d62728"}
MARKERS = "osD^vP*Xh"
_salt = count()


def to_svg(fig) -> str:
    """The figure as an <svg> element for inlining: no XML prolog/DOCTYPE (its DTD URL is a network
    reference), no metadata block, a unique hash salt per figure so clip-path ids of two figures on
    one page never collide, and a viewBox-only size so CSS scales it."""
    buf = io.StringIO()
    with plt.rc_context({"svg.hashsalt": f"roo-fig-{next(_salt)}"}):
        fig.savefig(
            buf,
            format="svg",
            bbox_inches="tight",
            metadata={"Date": None, "Creator": None, "Format": None, "Type": None},
        )
    plt.close(fig)
    s = buf.getvalue()
    s = s[s.index("<svg") :]
    # Keep the natural width/height (CSS caps it at the column width): every plot renders at the
    # same type size instead of being stretched to fill the page.
    return s.replace("<svg ", '<svg class="plot" role="img" ', 1)


def figure(ncols: int = 1, width: float = 6.4, height: float = 3.2):
    with plt.rc_context(_RC):
        fig, axes = plt.subplots(1, ncols, figsize=(width, height), squeeze=False)
    for ax in axes[0]:
        ax.set_axisbelow(True)
        for k, v in _RC.items():
            if k.startswith("axes.spines."):
                ax.spines[k.rsplit(".", 1)[1]].set_visible(v)
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=8)
    return fig, list(axes[0])


def _fmt_bytes(v: float) -> str:
    for unit, f in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(v) >= f:
            return f"{v / f:.3g} {unit}"
    return f"{v:.3g} B"


def storage_chart(formats: list[dict], title: str) -> str:
    """Grouped bars per codec: request-level vs impression-level grouped vs shuffled, bytes per
    impression and read time, each bar labelled with its ratio to request-level."""
    codecs = sorted(
        {f["codec"] for f in formats},
        key=lambda c: ("none", "snappy", "zstd").index(c) if c in ("none", "snappy", "zstd") else 9,
    )
    series = [
        ("request", "request-level"),
        ("grouped", "impression, grouped"),
        ("shuffled", "impression, shuffled"),
    ]

    def pick(codec, key):
        for f in formats:
            if f["codec"] == codec and f["series"] == key:
                return f
        return None

    fig, (a1, a2) = figure(2, 9.5, 3.3)
    width = 0.26
    top = {a1: 0.0, a2: 0.0}
    for j, (key, label) in enumerate(series):
        for ax, metric in ((a1, "bytes_per_impression"), (a2, "read_s")):
            xs, ys, ratios = [], [], []
            for i, c in enumerate(codecs):
                f = pick(c, key)
                if f is None or f.get(metric) is None:
                    continue
                xs.append(i + (j - 1) * width)
                ys.append(f[metric])
                base = pick(c, "request")
                ratios.append(f[metric] / base[metric] if base and base.get(metric) else None)
            if not xs:
                continue
            bars = ax.bar(xs, ys, width, label=label, color=ORDER_COLORS[key])
            top[ax] = max(top[ax], max(ys))
            for b, r in zip(bars, ratios, strict=True):
                if r is not None and key != "request":
                    ax.annotate(
                        f"{r:.1f}×",
                        (b.get_x() + b.get_width() / 2, b.get_height()),
                        ha="center",
                        va="bottom",
                        fontsize=7,
                    )
    for ax, ylabel in ((a1, "bytes per impression"), (a2, "read time (s)")):
        ax.set_xticks(range(len(codecs)))
        ax.set_xticklabels(codecs)
        ax.set_xlabel("codec")
        ax.set_ylabel(ylabel)
        ax.set_ylim(0, top[ax] * 1.12 or 1.0)
    a1.set_title(f"{title}: file bytes per impression", fontsize=9)
    a2.set_title("read time (whole file)", fontsize=9)
    a1.yaxis.set_major_formatter(EngFormatter(unit="B"))
    a2.yaxis.set_major_formatter(EngFormatter(unit="s"))
    fig.legend(*a1.get_legend_handles_labels(), loc="upper center", ncol=3, bbox_to_anchor=(0.5, 1.08))
    return to_svg(fig)


def compute_chart(components: list[dict], title: str) -> str:
    """Two stacked bars (impression-level, ROO) per panel: FLOPs (fwd+bwd) and bytes, by component."""
    names = []
    for c in components:
        if c["name"] not in names:
            names.append(c["name"])
    cmap = plt.get_cmap("tab20")
    fig, axes = figure(2, 9.5, 3.6)
    layouts = ["impression", "roo"]
    for ax, metric, ylabel in (
        (axes[0], "flops", "FLOPs per step (fwd+bwd)"),
        (axes[1], "bytes", "bytes per step"),
    ):
        bottom = [0.0, 0.0]
        for i, n in enumerate(names):
            vals = []
            for lay in layouts:
                v = sum(c[metric] or 0.0 for c in components if c["name"] == n and c["layout"] == lay)
                vals.append(v)
            ax.bar([0, 1], vals, 0.55, bottom=bottom, color=cmap(i % 20), label=n)
            bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
        unit = "FLOP" if metric == "flops" else "B"
        for x, b in enumerate(bottom):
            ax.annotate(EngFormatter(unit=unit, places=1)(b), (x, b), ha="center", va="bottom", fontsize=7)
        ax.yaxis.set_major_formatter(EngFormatter(unit=unit))
        ax.set_ylim(0, max(bottom) * 1.1 or 1.0)
        ax.set_xticks([0, 1])
        ax.set_xticklabels(["impression-level", "ROO"])
        ax.set_ylabel(ylabel)
        ax.set_xlim(-0.6, 1.6)
    axes[0].set_title(f"{title}: FLOPs by component", fontsize=9)
    axes[1].set_title("bytes moved by component", fontsize=9)
    axes[1].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7)
    return to_svg(fig)


def sweep_chart(series: list[dict], xlabel: str, title: str) -> str:
    """Measured speedup (with its CI) over the predicted curve and the ideal 1/(f_u/k + 1 − f_u).
    series: [{label, x, measured, lo, hi, predicted, ideal, failed_x}]"""
    fig, (ax,) = figure(1, 5.6, 3.4)
    for i, s in enumerate(series):
        color = plt.get_cmap("tab10")(i % 10)
        order = sorted(range(len(s["x"])), key=lambda j: s["x"][j])
        xs = [s["x"][j] for j in order]
        pred = [s["predicted"][j] for j in order]
        ideal = [s["ideal"][j] for j in order]
        if any(p is not None for p in pred):
            ax.plot(
                [x for x, p in zip(xs, pred, strict=True) if p is not None],
                [p for p in pred if p is not None],
                "-",
                color=color,
                alpha=0.7,
                label=_lab("predicted", s, series),
            )
        if any(p is not None for p in ideal):
            ax.plot(
                [x for x, p in zip(xs, ideal, strict=True) if p is not None],
                [p for p in ideal if p is not None],
                ":",
                color=color,
                alpha=0.5,
                label=_lab("ideal (user-side share)", s, series),
            )
        meas = [(s["x"][j], s["measured"][j], s["lo"][j], s["hi"][j]) for j in order if s["measured"][j] is not None]
        if meas:
            mx, my = [m[0] for m in meas], [m[1] for m in meas]
            err = [
                [max(0.0, m[1] - (m[2] if m[2] is not None else m[1])) for m in meas],
                [max(0.0, (m[3] if m[3] is not None else m[1]) - m[1]) for m in meas],
            ]
            ax.errorbar(
                mx,
                my,
                yerr=err,
                fmt=MARKERS[i % len(MARKERS)],
                color=color,
                capsize=2,
                ms=5,
                label=_lab("measured", s, series),
            )
        for fx in s.get("failed_x", []):
            ax.axvline(fx, color="#d62728", ls="--", lw=0.8, alpha=0.6)
            ax.annotate("failed", (fx, 1.0), rotation=90, fontsize=7, color="#d62728", va="bottom")
    ax.axhline(1.0, color="black", lw=0.6)
    allx = [x for s in series for x in s["x"] + s.get("failed_x", []) if x]
    if allx and min(allx) > 0 and max(allx) / min(allx) >= 8:
        ax.set_xscale("log", base=2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("ROO speedup (× impression-level step)")
    ax.set_title(title + (f" — {series[0]['label']}" if len(series) == 1 else ""), fontsize=9)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2 if len(series) > 1 else 3, fontsize=7)
    return to_svg(fig)


def _lab(what: str, s: dict, series: list) -> str:
    return what if len(series) == 1 else f"{what} — {s['label']}"


def roofline_chart(points: list[dict], roofs: list[dict], title: str) -> str:
    """points: [{label, layout, intensity, tflops}]; roofs: [{label, peak_tflops, bandwidth_tbs}]."""
    import math

    fig, (ax,) = figure(1, 6.4, 3.8)
    xs = [p["intensity"] for p in points] or [1.0]
    lo, hi = min(xs) / 4, max(xs) * 4
    for r in roofs:
        ridge = r["peak_tflops"] / r["bandwidth_tbs"]
        lo, hi = min(lo, ridge / 16), max(hi, ridge * 4)
    grid = [lo * (hi / lo) ** (i / 100) for i in range(101)]
    for i, r in enumerate(roofs):
        ys = [min(r["peak_tflops"], x * r["bandwidth_tbs"]) for x in grid]
        ax.plot(grid, ys, "-", color="black", alpha=0.35 + 0.3 * (i % 2), lw=1.2)
        ax.annotate(
            f"{r['label']}: {r['peak_tflops']:.3g} TFLOP/s, {r['bandwidth_tbs']:.3g} TB/s",
            (grid[-1], r["peak_tflops"]),
            ha="right",
            va="top",
            fontsize=7,
            xytext=(0, -3),
            textcoords="offset points",
        )
    labels = sorted({p["label"] for p in points})
    for p in points:
        m = MARKERS[labels.index(p["label"]) % len(MARKERS)]
        ax.scatter(
            [p["intensity"]],
            [p["tflops"]],
            marker=m,
            color=LAYOUT_COLORS.get(p["layout"], "C3"),
            s=22,
            zorder=3,
            edgecolors="white",
            linewidths=0.4,
        )
    # Legend proxies: colour = layout, marker = source.
    for lay, col in LAYOUT_COLORS.items():
        ax.scatter([], [], color=col, marker="s", label="ROO" if lay == "roo" else "impression-level")
    for i, lab in enumerate(labels):
        ax.scatter([], [], color="#444", marker=MARKERS[i % len(MARKERS)], label=lab)
    ax.set_xscale("log")
    ax.set_yscale("log")
    if points:
        ymin = min(p["tflops"] for p in points)
        ax.set_ylim(bottom=10 ** math.floor(math.log10(max(ymin, 1e-6)) - 0.5))
    ax.set_xlabel("arithmetic intensity (FLOP / byte)")
    ax.set_ylabel("achieved TFLOP/s")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return to_svg(fig)


def comm_chart(rows: list[dict], title: str) -> str:
    """rows: [{series, layout, world, bytes, ms}] — bytes and time per step vs world size."""
    fig, (a1, a2) = figure(2, 9.5, 3.2)
    keys = []
    for r in rows:
        if (r["series"], r["layout"]) not in keys:
            keys.append((r["series"], r["layout"]))
    for i, (series, lay) in enumerate(keys):
        pts = sorted((r["world"], r["bytes"], r["ms"]) for r in rows if r["series"] == series and r["layout"] == lay)
        label = f"{'ROO' if lay == 'roo' else 'impression'} — {series}"
        ls = "-" if lay == "roo" else "--"
        m = MARKERS[i // 2 % len(MARKERS)]
        col = LAYOUT_COLORS.get(lay)
        bx = [(w, b) for w, b, _ in pts if b is not None]
        tx = [(w, t) for w, _, t in pts if t is not None]
        if bx:
            a1.plot([w for w, _ in bx], [b for _, b in bx], ls, marker=m, color=col, label=label)
        if tx:
            a2.plot([w for w, _ in tx], [t for _, t in tx], ls, marker=m, color=col, label=label)
    a1.yaxis.set_major_formatter(EngFormatter(unit="B"))
    for ax, yl in ((a1, "all-to-all bytes per step (counted)"), (a2, "comm time per step (ms, median)")):
        ax.set_ylim(bottom=0)
        ax.set_xlabel("world size (ranks)")
        ax.set_ylabel(yl)
        ax.set_xticks(sorted({r["world"] for r in rows}))
    a1.set_title(title, fontsize=9)
    a2.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return to_svg(fig)


def comm_projection_chart(curves: list[dict], points: list[dict], title: str) -> str:
    """curves: [{layout, world, bytes, ms}] of the model; points: the same, measured. Log-log."""
    fig, (a1, a2) = figure(2, 9.5, 3.2)
    for lay in ("impression", "roo"):
        col, name = LAYOUT_COLORS.get(lay), _layout_label(lay)
        cur = sorted((r["world"], r["bytes"], r["ms"]) for r in curves if r["layout"] == lay)
        pts = sorted((r["world"], r["bytes"], r["ms"]) for r in points if r["layout"] == lay)
        for ax, j in ((a1, 1), (a2, 2)):
            xy = [(c[0], c[j]) for c in cur if c[j] is not None]
            if xy:
                ax.plot(*zip(*xy, strict=True), "-" if lay == "roo" else "--", color=col, label=f"{name}, model")
            xy = [(p[0], p[j]) for p in pts if p[j] is not None]
            if xy:
                ax.plot(*zip(*xy, strict=True), "o", color=col, label=f"{name}, measured")
    a1.yaxis.set_major_formatter(EngFormatter(unit="B"))
    for ax, yl in ((a1, "all-to-all bytes per step"), (a2, "collective time per step (ms)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("world size (ranks)")
        ax.set_ylabel(yl)
    a1.set_title(_wrap(title, 70), fontsize=8)
    a2.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return to_svg(fig)


def energy_chart(rows: list[dict], title: str) -> str:
    """rows: [{label, impression, roo}] — joules per 1M impressions."""
    fig, (ax,) = figure(1, 6.4, 0.6 + 0.45 * max(2, len(rows)))
    for i, r in enumerate(rows):
        for j, lay in enumerate(("impression", "roo")):
            v = r.get(lay)
            if v is None:
                continue
            y = i + (j - 0.5) * 0.38
            ax.barh(
                y,
                v,
                0.36,
                color=LAYOUT_COLORS[lay],
                label=("ROO" if lay == "roo" else "impression-level") if i == 0 else None,
            )
            ax.annotate(
                EngFormatter(unit="J", places=2)(v),
                (v, y),
                va="center",
                fontsize=7,
                xytext=(2, 0),
                textcoords="offset points",
            )
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([r["label"] for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("energy per 1M impressions")
    ax.xaxis.set_major_formatter(EngFormatter(unit="J"))
    ax.set_xlim(0, max([r.get(k) or 0 for r in rows for k in ("impression", "roo")] + [1e-9]) * 1.2)
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return to_svg(fig)


def savings_chart(quantities: list[dict], title: str) -> str:
    """The first screen's chart: per quantity, impression-level and ROO as bars relative to the
    impression level (= 1), each labelled with its value; the quantity's row names its source, and a
    quantity with no value says why. quantities: [{label, unit, imp, roo, source, missing}]."""
    n = len(quantities)
    fig, (ax,) = figure(1, 9.8, 0.55 + 0.78 * n)
    top, labelled = 1.0, set()
    for i, q in enumerate(quantities):
        if q["imp"] is None:
            ax.annotate(q["missing"], (0.01, i), va="center", fontsize=7.5, color="#5b6574", style="italic")
            continue
        rel = q["roo"] / q["imp"]
        top = max(top, rel)
        for j, (lay, v, r) in enumerate((("impression", q["imp"], 1.0), ("roo", q["roo"], rel))):
            y = i + (j - 0.5) * 0.36
            ax.barh(y, r, 0.34, color=LAYOUT_COLORS[lay], label=None if lay in labelled else _layout_label(lay))
            labelled.add(lay)
            text = EngFormatter(unit=q["unit"], places=2)(v)
            if lay == "roo":
                text += f"  ({q['imp'] / q['roo']:.2f}× less)" if rel <= 1 else f"  ({rel:.2f}× more)"
            ax.annotate(text, (r, y), va="center", fontsize=7.5, xytext=(3, 0), textcoords="offset points")
    ax.set_yticks(range(n))
    ax.set_yticklabels([f"{q['label']}\n{_wrap(q['source'] or 'not measured', 58)}" for q in quantities], fontsize=7.5)
    ax.invert_yaxis()
    ax.set_xlim(0, top * 1.45)
    ax.axvline(1.0, color="black", lw=0.6, alpha=0.5)
    ax.set_xlabel("relative to impression-level (= 1); shorter is cheaper")
    ax.set_title(title, fontsize=10)
    if labelled:
        ax.legend(loc="lower right", fontsize=7.5)
    return to_svg(fig)


def _layout_label(layout: str) -> str:
    return "ROO" if layout == "roo" else "impression-level"


def _wrap(text: str, width: int) -> str:
    """Break a label at spaces so no line is much longer than `width` characters."""
    lines, cur = [], ""
    for w in text.split(" "):
        if cur and len(cur) + 1 + len(w) > width:
            lines.append(cur)
            cur = w
        else:
            cur = f"{cur} {w}" if cur else w
    return "\n".join([*lines, cur])
