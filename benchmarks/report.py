"""What ``python -m benchmarks.run`` makes of its measurements: ratios against the uncompressed
row, the printed table and the plot."""

from __future__ import annotations

from .common import format_table


def add_ratios(rows: list[dict]) -> None:
    """Speed-ups (of the medians, and of the fastest repeats) and memory ratios against the
    ``none`` row, in place."""
    base = next(r for r in rows if r["method"] == "none")
    for r in rows:
        sp = {}
        for s in ("vision", "prefill", "decode", "end_to_end"):
            a, b = base["times_ms"][s]["median"], r["times_ms"][s]["median"]
            sp[s] = a / b if a and b else None
        r["speedup"] = sp
        # The same from the fastest repeat of each (less sensitive to other load on the machine).
        best = {}
        for s in ("prefill", "end_to_end"):
            a, b = base["times_ms"][s]["min"], r["times_ms"][s]["min"]
            best[s] = a / b if a and b else None
        r["speedup_best"] = best
        r["theory"]["flops_ratio"] = r["theory"]["prefill_tflops"] / base["theory"]["prefill_tflops"]
        r["theory"]["speedup"] = 1.0 / r["theory"]["flops_ratio"]
        r["theory"]["flops_ratio_visual_only"] = (
            r["theory"]["prefill_tflops_visual_only"] / base["theory"]["prefill_tflops_visual_only"]
        )
        mem, bmem = r["memory"], base["memory"]
        mem["kv_cache_ratio"] = mem["kv_cache_mb"] / bmem["kv_cache_mb"]
        if "end_to_end_delta_mb" in mem and bmem.get("end_to_end_delta_mb"):
            mem["end_to_end_delta_ratio"] = mem["end_to_end_delta_mb"] / bmem["end_to_end_delta_mb"]


def render(payload: dict) -> str:
    headers = ["config", "vis tok", "seq", "vision", "compr", "prefill", "decode/tok", "e2e",
               "peak ΔMB", "KV MB", "prefill x", "e2e x", "FLOPs x"]
    body = []
    for r in payload["results"]:
        t, m = r["times_ms"], r["memory"]
        body.append([
            r["label"], r["visual_tokens"], r["sequence_length"], t["vision"]["median"], t["compression"]["median"],
            t["prefill"]["median"], t["decode"]["median"], t["end_to_end"]["median"],
            m.get("end_to_end_delta_mb"), m["kv_cache_mb"], r["speedup"]["prefill"], r["speedup"]["end_to_end"],
            r["theory"]["speedup"],
        ])
    meta = payload["meta"]
    head = (f"{meta['note']}\n{meta['environment']['device']} {meta['dtype']}, image {meta['image_size'][0]}x"
            f"{meta['image_size'][1]} ({meta['visual_tokens_uncompressed']} visual + {meta['text_tokens']} text "
            f"tokens), {meta['new_tokens']} new tokens, median of {meta['repeats']}; times in ms")
    return head + "\n" + format_table(headers, body)


def plot(payload: dict, path: str) -> str:
    """Prefill and end-to-end speed-up (with the FLOPs curve) and memory vs retention ratio."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = payload["results"]
    base = next(r for r in rows if r["method"] == "none")
    methods = [m for m in dict.fromkeys(r.get("series", r["method"]) for r in rows) if m != "none"]
    per_method = {m: sorted((r for r in rows if r.get("series", r["method"]) == m), key=lambda r: r["ratio"])
                  for m in methods}
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    markers, colors = "osD^v<>", plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, stage, title in ((axes[0], "prefill", "LLM prefill"), (axes[1], "end_to_end", "end to end")):
        for i, m in enumerate(methods):
            rs, c = per_method[m], colors[i % len(colors)]
            xs = [r["ratio"] for r in rs]
            ax.plot(xs, [r["speedup"][stage] for r in rs], marker=markers[i % 7], color=c, label=f"{m} (measured)")
            ax.plot(xs, [r["theory"]["speedup"] for r in rs], ":", color=c, lw=1.5,
                    label=f"{m}: FLOPs(none) / FLOPs(R)")
        ax.plot([1.0], [1.0], "k*", ms=10, label="none (baseline)")
        ax.set_yscale("log")
        ax.set_xlabel("retention ratio R")
        ax.set_ylabel("speed-up vs uncompressed (×)")
        ax.set_title(f"{title} speed-up (dotted: prefill FLOPs ratio, theory)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    ax = axes[2]
    for i, m in enumerate(methods):
        rs, c = per_method[m], colors[i % len(colors)]
        xs = [r["ratio"] for r in rs]
        if all("end_to_end_delta_mb" in r["memory"] for r in rs):
            ax.plot(xs, [r["memory"]["end_to_end_delta_mb"] for r in rs], marker=markers[i % 7], color=c,
                    label=f"{m}: peak above live")
        ax.plot(xs, [r["memory"]["kv_cache_mb"] for r in rs], ":", color=c, lw=1.5, label=f"{m}: KV cache")
    if "end_to_end_delta_mb" in base["memory"]:
        ax.plot([1.0], [base["memory"]["end_to_end_delta_mb"]], "k*", ms=10, label="none: peak above live")
    ax.plot([1.0], [base["memory"]["kv_cache_mb"]], "kx", ms=8, label="none: KV cache")
    ax.set_xlabel("retention ratio R")
    ax.set_ylabel("MiB")
    ax.set_title(f"memory of one generate ({payload['meta'].get('memory_method') or 'KV only'})")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    meta = payload["meta"]
    fig.suptitle(f"{meta['note']}\n{meta['environment']['device']}, {meta['dtype']}, image "
                 f"{meta['image_size'][0]}x{meta['image_size'][1]}, median of {meta['repeats']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
