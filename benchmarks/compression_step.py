"""Time the compression step alone, for one LLaVA-NeXT-7B-shaped image.

``python -m benchmarks.compression_step`` builds random projected features for the 5 views of
an image (thumbnail + 2×2 crops, 576 tokens each, D = 4096), random [CLS] scores and the image
newline, and times ``build_compressor(method, retention_ratio=R, layout=...).compress(views,
newline, layout, scores)`` — selection, packing and the gather — for every method, token layout
(``faithful`` / ``reference``), retention ratio, image layout (672×672: no letterbox; 1000×600:
letterboxed) and feature dtype. Median of ``--repeats`` calls after ``--warmup`` calls, the calls
of each configuration split over ``--sweeps`` passes through all configurations.

Beside it, in the same run, :func:`release_loop_compress`: a re-implementation of the authors'
released compression step as REFERENCE §2 describes it (a Python loop over the thumbnail tokens
with a host sync per token to build the crop budgets, a per-token write-back loop for the kept
crop tokens, per-row assembly, fp16 output). It produces exactly the token sequence of our
``globalcom2`` with ``layout="reference"`` (checked on every run), so the two time the same job.

Target: GlobalCom² (faithful layout) under 2 ms median at R = 0.25 in fp32.
"""

from __future__ import annotations

import argparse
import functools
import math
import statistics
import sys
import time
from typing import Any

import torch
import torch.nn.functional as F

from llava.compression import AnyResLayout, build_compressor
from llava.testing.tiny_checkpoint import V16_PINPOINTS
from llava.utils import synchronize

from .common import DTYPES, environment, format_table, ratio_arg, resolve_device, write_json

METHODS = ("globalcom2", "fastervlm", "uniform_random", "none")
TARGET_MS = 2.0
TARGET = dict(method="globalcom2", layout="faithful", ratio=0.25, dtype="float32")


# ----------------------------------------------------------------------------- the release, as a loop


def release_loop_compress(
    views: torch.Tensor,
    newline: torch.Tensor,
    layout: AnyResLayout,
    scores: torch.Tensor,
    ratio: float,
    temperature: float = 10.0,
) -> torch.Tensor:
    """The released GlobalCom² compression step, written the way the release computes it.

    ``views`` ``[1 + n, N, D]`` (thumbnail first), ``scores`` ``[1 + n, N]`` pre-softmax [CLS]
    logits, ``newline`` ``[D]`` → ``[T, D]`` float16. Behaviour (REFERENCE §2): the thumbnail
    keeps its top ``⌊N·R⌋`` tokens in descending-score order; crop budgets come from the
    thumbnail scores summed over an even ``gh × gw`` partition of the 24×24 map (walked token by
    token, one host sync each), then ``r_j = min(1, R·(1 + σ_j − mean σ))`` with
    ``σ = softmax((s − max s)/τ)`` in float64; crop ``j`` keeps its top ``⌊N_j·r_j⌋`` unpadded
    tokens by ``L2norm(local) + L2norm(global)`` (global = the thumbnail map bilinearly resized
    to the unpadded grid); kept token ``u`` (its index among the crop's unpadded tokens) is
    written, one token at a time, into cell ``u`` of the crop's 24×24 grid; the padded canvas is
    then emitted row by row with a newline after every row.
    """
    side, gw, gh = layout.side, layout.grid_w, layout.grid_h
    n_tok, dim, device = side * side, views.shape[-1], views.device
    thumb = scores[0].float()

    # Thumbnail: top-k by descending score.
    k_thumb = int(n_tok * ratio)
    thumb_order = torch.topk(thumb, k_thumb).indices
    thumb_tokens = views[0][thumb_order]

    # Crop budgets: walk the thumbnail tokens, one host sync per token.
    region = torch.zeros(gw * gh, dtype=torch.float64, device=device)
    part_w, part_h = max(side // gw, 1), max(side // gh, 1)
    for t in range(n_tok):
        row, col = divmod(t, side)
        j = min(row // part_h, gh - 1) * gw + min(col // part_w, gw - 1)
        region[j] += thumb[t].item()
    e = torch.exp((region - region.max()) / temperature)
    sigma = e / (e.sum() + 1e-8)
    budgets = torch.clamp(ratio * (1.0 + sigma - sigma.mean()), max=1.0)

    # Global score map over the unpadded canvas.
    top, bottom, left, right = layout.top, layout.bottom, layout.left, layout.right
    big = F.interpolate(thumb.view(1, 1, side, side), size=(bottom - top, right - left), mode="bilinear",
                        align_corners=False)[0, 0]

    grids = torch.zeros(gh * gw, n_tok, dim, dtype=views.dtype, device=device)
    filled = torch.zeros(gh * gw, n_tok, dtype=torch.bool, device=device)
    for j in range(gh * gw):
        gy, gx = divmod(j, gw)
        r0, r1 = max(gy * side, top), min((gy + 1) * side, bottom)
        c0, c1 = max(gx * side, left), min((gx + 1) * side, right)
        if r1 <= r0 or c1 <= c0:
            continue
        rows = slice(r0 - gy * side, r1 - gy * side)
        cols = slice(c0 - gx * side, c1 - gx * side)
        feats = views[1 + j].view(side, side, dim)[rows, cols].reshape(-1, dim)
        local = scores[1 + j].float().view(side, side)[rows, cols].reshape(-1)
        glob = big[r0 - top : r1 - top, c0 - left : c1 - left].reshape(-1)
        combined = F.normalize(local, dim=0) + F.normalize(glob, dim=0)
        k_j = int(math.floor(combined.numel() * budgets[j].item()))
        kept = torch.topk(combined, k_j).indices.tolist()
        for u in sorted(kept):  # per-token write-back, at cell u of the 24×24 grid
            grids[j, u] = feats[u]
            filled[j, u] = True

    # Padded canvas, row by row, a newline after each row.
    canvas = grids.view(gh, gw, side, side, dim).permute(0, 2, 1, 3, 4).reshape(gh * side, gw * side, dim)
    mask = filled.view(gh, gw, side, side).permute(0, 2, 1, 3).reshape(gh * side, gw * side)
    nl = newline.to(views.dtype)[None]
    pieces = [thumb_tokens]
    for r in range(gh * side):
        pieces += [canvas[r][mask[r]], nl]
    return torch.cat(pieces).to(torch.float16)


# ----------------------------------------------------------------------------- timing


def time_calls(fn, device, repeats: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    synchronize(device)
    out = []
    for _ in range(repeats):
        synchronize(device)
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        out.append(time.perf_counter() - t0)
    return out


def stats_ms(values: list[float]) -> dict[str, Any]:
    ms = sorted(1e3 * v for v in values)
    q = statistics.quantiles(ms, n=10) if len(ms) >= 2 else [ms[0]] * 9
    return {"median": statistics.median(ms), "p10": q[0], "p90": q[-1], "min": ms[0], "n": len(ms)}


def make_inputs(image_size, dim: int, dtype: torch.dtype, device, seed: int = 0):
    layout = AnyResLayout.for_image(tuple(image_size), V16_PINPOINTS)
    g = torch.Generator().manual_seed(seed)
    views = torch.randn(layout.n_views, layout.tokens_per_view, dim, generator=g).to(device, dtype)
    newline = torch.randn(dim, generator=g).to(device, dtype)
    scores = torch.randn(layout.n_views, layout.tokens_per_view, generator=g).to(device)
    return layout, views, newline, scores


def run(args) -> dict[str, Any]:
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    jobs, checks = [], []  # job: (row, callable, repeats)
    for size in args.images:
        for dname in args.dtypes:
            dtype = DTYPES[dname]
            layout, views, newline, scores = make_inputs(size, args.dim, dtype, device, args.seed)
            image = f"{size[0]}x{size[1]}"
            for method in args.methods:
                layouts = ("faithful",) if method == "none" else args.layouts
                ratios = (1.0,) if method == "none" else args.ratios
                for lay in layouts:
                    for r in ratios:
                        opts = {"layout": lay} if method == "none" else {"layout": lay, "retention_ratio": r}
                        comp = build_compressor(method, **opts)
                        out = comp.compress(views, newline, layout, scores)
                        row = {"image": image, "dtype": dname, "method": method, "layout": lay, "ratio": r,
                               "tokens": int(out.index.shape[0])}
                        jobs.append((row, functools.partial(comp.compress, views, newline, layout, scores),
                                     args.repeats))
            if args.baseline_repeats:
                for r in args.ratios:
                    ours = build_compressor("globalcom2", retention_ratio=r, layout="reference")
                    ref = ours.compress(views, newline, layout, scores).tokens.to(torch.float16)
                    loop = release_loop_compress(views, newline, layout, scores, r)
                    same = loop.shape == ref.shape and bool(torch.equal(loop, ref))
                    checks.append({"image": image, "dtype": dname, "ratio": r, "matches_globalcom2_reference": same})
                    row = {"image": image, "dtype": dname, "method": "release_loop", "layout": "reference", "ratio": r,
                           "tokens": int(loop.shape[0])}
                    jobs.append((row, functools.partial(release_loop_compress, views, newline, layout, scores, r),
                                 args.baseline_repeats))

    # Sweeps: every configuration runs a short tight loop per sweep (after ``--warmup`` untimed
    # calls in the first sweep and one in the others), so bursts of load on a shared machine
    # spread over all configurations instead of hitting a few.
    times: list[list[float]] = [[] for _ in jobs]
    sweeps = max(1, args.sweeps)
    for sweep in range(sweeps):
        for i, (_, fn, n) in enumerate(jobs):
            share = n // sweeps + (1 if sweep < n % sweeps else 0)
            if share:
                times[i] += time_calls(fn, device, share, args.warmup if sweep == 0 else 1)
    rows = [{**row, "ms": stats_ms(t)} for (row, _, _), t in zip(jobs, times) if row["method"] != "release_loop"]
    baseline_rows = [{**row, "ms": stats_ms(t)} for (row, _, _), t in zip(jobs, times)
                     if row["method"] == "release_loop"]
    add_speedups(rows, baseline_rows)
    target = [
        {"image": r["image"], "median_ms": r["ms"]["median"], "target_ms": TARGET_MS, "met": r["ms"]["median"] < TARGET_MS}
        for r in rows
        if all(r[k] == v for k, v in TARGET.items())
    ]
    return {
        "meta": {
            "dim": args.dim, "views": "thumbnail + crops, 576 tokens each", "pinpoints": V16_PINPOINTS,
            "repeats": args.repeats, "warmup": args.warmup, "baseline_repeats": args.baseline_repeats,
            "sweeps": args.sweeps, "threads": torch.get_num_threads(),
            "statistic": "median (p10/p90) wall time of one compress() call, device synchronised",
            "scores": "random float32 [V, 576]; features random in the listed dtype",
            "baseline": "release_loop: re-implementation of the authors' released loop-based step (REFERENCE §2)",
            "environment": environment(device),
        },
        "results": rows,
        "release_loop": baseline_rows,
        "release_loop_checks": checks,
        "target": {"config": TARGET, "results": target},
    }


def add_speedups(rows: list[dict], baseline_rows: list[dict]) -> None:
    """``release_loop_speedup`` = release loop median / this row's median (same image, dtype, R)."""
    base = {(b["image"], b["dtype"], b["ratio"]): b["ms"]["median"] for b in baseline_rows}
    for r in rows:
        b = base.get((r["image"], r["dtype"], r["ratio"]))
        r["release_loop_speedup"] = b / r["ms"]["median"] if b and r["method"] != "none" else None


def render(payload: dict) -> str:
    headers = ["image", "dtype", "method", "layout", "R", "tokens", "median ms", "p10", "p90", "loop / this"]
    body = [
        [r["image"], r["dtype"], r["method"], r["layout"], r["ratio"], r["tokens"], r["ms"]["median"], r["ms"]["p10"],
         r["ms"]["p90"], r.get("release_loop_speedup")]
        for r in payload["results"] + payload["release_loop"]
    ]
    lines = [format_table(headers, body)]
    for c in payload["release_loop_checks"]:
        lines.append(f"release loop == globalcom2(layout=reference), {c['image']} {c['dtype']} R={c['ratio']:g}: "
                     f"{c['matches_globalcom2_reference']}")
    for t in payload["target"]["results"]:
        verdict = "met" if t["met"] else "MISSED"
        lines.append(f"target: globalcom2 faithful R=0.25 fp32 on {t['image']}: {t['median_ms']:.3f} ms median "
                     f"(< {TARGET_MS} ms: {verdict})")
    return "\n".join(lines)


def profile(args) -> str:
    """Per-operator profile of the target configuration (``--profile-ops``)."""
    device = resolve_device(args.device)
    size = args.images[0]
    layout, views, newline, scores = make_inputs(size, args.dim, torch.float32, device, args.seed)
    comp = build_compressor("globalcom2", retention_ratio=0.25)
    for _ in range(10):
        comp.compress(views, newline, layout, scores)
    with torch.profiler.profile() as prof:
        for _ in range(50):
            comp.compress(views, newline, layout, scores)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.compression_step", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--layouts", nargs="+", default=["faithful", "reference"], choices=["faithful", "reference"])
    ap.add_argument("--ratios", nargs="+", type=ratio_arg, default=[1.0, 0.75, 0.5, 0.25, 0.1])
    ap.add_argument("--images", nargs="+", type=lambda s: tuple(int(x) for x in s.lower().split("x")),
                    default=[(672, 672), (1000, 600)], help="image sizes WxH (default 672x672 1000x600)")
    ap.add_argument("--dtypes", nargs="+", default=["float32", "float16"], choices=list(DTYPES))
    ap.add_argument("--dim", type=int, default=4096, help="feature width D (7B: 4096)")
    ap.add_argument("--repeats", type=int, default=50, help="timed calls per configuration (default 50)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed calls before the first timed one (default 5)")
    ap.add_argument("--sweeps", type=int, default=5,
                    help="split the repeats of every configuration over this many passes (default 5)")
    ap.add_argument("--baseline-repeats", type=int, default=20,
                    help="timed calls of the release-loop baseline per image/dtype/R (0 = skip; default 20)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--profile-ops", action="store_true",
                    help="also print a torch.profiler table of globalcom2 R=0.25 fp32 (first image)")
    ap.add_argument("--out", default="benchmarks/results/compression_step.json")
    return ap


def main(argv=None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    if args.repeats < 1 or args.warmup < 0 or args.baseline_repeats < 0 or args.sweeps < 1:
        raise SystemExit("error: --repeats >= 1, --warmup >= 0, --baseline-repeats >= 0, --sweeps >= 1")
    payload = run(args)
    write_json(args.out, payload)
    print(render(payload))
    print(f"wrote {args.out}")
    if args.profile_ops:
        print(profile(args), file=sys.stdout)
    return payload


if __name__ == "__main__":
    main()
