"""The GPU fast path measured in one command (issue 12.5): ``benchmarks/gpu.sh`` runs this.

On a CUDA machine without weights: full-size SD 2.1 (and SVD) with random weights, per stage (reference
run, stages 1-2, modulated runs, VAE decode) seconds per frame at 512x512 and 832x448 with L = 10 planted
labels, peak GPU memory, frames/s and MFU against the card's dense bf16 peak, for these variants:

- ``base``: UNet bf16, VAE fp32 (TF32), no stage-3 reuse (``bench.REUSE_OFF``);
- ``reuse``: + prefix replay, no q/k projections, shared softmax(QK^T), one-token cross-attentions
  (``bench.REUSE_ON``);
- ``bf16-vae``: + VAE in bf16;
- ``channels-last``: + UNet weights channels_last;
- ``compile`` (``--compile``): + ``torch.compile`` of the UNet.

Stage-3 chunk size: the backbone's default from free GPU memory (reported). The SDPA backend that runs is
read off a profiler trace of one UNet call. FLOPs are counted by FlopCounterMode over the warm-up frame's
real calls. The table replaces the block between the ``gpu-bench`` markers of ``docs/perf.md``, with the
card's name; without CUDA (``--dry-run``) every row says "not measured yet".
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- gpu-bench:start -->", "<!-- gpu-bench:end -->"
NOT_MEASURED = "not measured yet"
STAGES = ("reference run", "stages 1-2", "modulated runs", "decode")
VARIANTS = ("base", "reuse", "bf16-vae", "channels-last", "compile")
# dense bf16 tensor-core peaks (TFLOP/s), vendor datasheets
BF16_PEAK = {"H200": 989.0, "H100 SXM": 989.0, "H100 80GB HBM3": 989.0, "H100 PCIe": 756.0, "H100": 989.0,
             "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10G": 125.0}  # fmt: skip


def parse_size(text: str) -> tuple[int, int]:
    """``"832x448"`` -> (width 832, height 448); both multiples of 64."""
    w, h = (int(v) for v in text.lower().split("x"))
    if w % 64 or h % 64 or w < 64 or h < 64:
        raise argparse.ArgumentTypeError(f"size {text!r}: width and height must be multiples of 64")
    return w, h


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="benchmarks/gpu.sh", description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=lambda s: [parse_size(v) for v in s.split(",")],
                   default=[(512, 512), (832, 448)], help="WxH list (default 512x512,832x448)")  # fmt: skip
    p.add_argument("--labels", type=int, default=10, help="L planted labels per frame (default 10)")
    p.add_argument("--frames", type=int, default=2, help="SD frames timed per variant and size")
    p.add_argument("--svd-frames", type=int, default=14, help="SVD clip length (one batch)")
    p.add_argument("--no-svd", action="store_true", help="leave SVD out")
    p.add_argument("--compile", action="store_true", help="also time torch.compile of the UNet")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "perf.md", help="markdown file to update")
    p.add_argument("--dry-run", action="store_true", help="no GPU: write the table with 'not measured yet'")
    a = p.parse_args(argv)
    if a.labels < 2 or a.frames < 1 or a.svd_frames < 1:
        p.error("--labels >= 2, --frames >= 1, --svd-frames >= 1")
    return a


@dataclass
class Row:
    """One measured configuration (None: not measured)."""

    model: str
    variant: str
    size: tuple[int, int]
    seconds: dict[str, float] | None = None  # per frame, per stage
    peak_gb: float | None = None
    tflop_per_frame: float | None = None
    chunk: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def fps(self) -> float | None:
        return None if self.seconds is None else 1.0 / sum(self.seconds.values())

    def mfu(self, peak: float | None) -> float | None:
        if self.fps is None or self.tflop_per_frame is None or not peak:
            return None
        return self.tflop_per_frame * self.fps / peak


def planned_rows(args: argparse.Namespace) -> list[Row]:
    rows = [Row("SD 2.1", v, s) for s in args.sizes for v in VARIANTS if v != "compile"]
    if args.compile:  # last: compiling is in place and stays on
        rows += [Row("SD 2.1", "compile", s) for s in args.sizes]
    if not args.no_svd:
        rows += [Row("SVD", v, (512, 512)) for v in ("base", "reuse")]
    return rows


def render(rows: list[Row], card: str | None, peak: float | None, notes: list[str]) -> str:
    """The markdown table (every unmeasured cell: "not measured yet")."""
    head = (
        f"Card: **{card or NOT_MEASURED}** (dense bf16 peak {f'{peak:.0f} TFLOP/s' if peak else 'unknown'}). "
        "Random weights, L planted labels per frame; seconds per frame per stage.\n\n"
        "| model | variant | W x H | "
        + " | ".join(STAGES)
        + " | frames/s | peak GPU GiB | TFLOP/frame | MFU | chunk |\n"
        "|---|---|---|" + "---|" * (len(STAGES) + 5)
    )
    lines = [head]
    for r in rows:
        sec = [f"{r.seconds[s]:.3f}" if r.seconds else NOT_MEASURED for s in STAGES]
        mfu = r.mfu(peak)
        cells = [r.model, r.variant, f"{r.size[0]}x{r.size[1]}", *sec,
                 f"{r.fps:.3f}" if r.fps else NOT_MEASURED,
                 f"{r.peak_gb:.1f}" if r.peak_gb is not None else NOT_MEASURED,
                 f"{r.tflop_per_frame:.1f}" if r.tflop_per_frame is not None else NOT_MEASURED,
                 f"{100 * mfu:.1f}%" if mfu is not None else NOT_MEASURED,
                 str(r.chunk) if r.chunk else NOT_MEASURED]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines + [""] + [f"- {n}" for n in notes]) + "\n"


def write_block(path: Path, block: str) -> None:
    """Replace the text between the gpu-bench markers of ``path`` (appended with them when absent)."""
    text = path.read_text() if path.exists() else ""
    new = f"{START}\n{block}{END}"
    if START in text and END in text:
        a, b = text.index(START), text.index(END) + len(END)
        text = text[:a] + new + text[b:]
    else:
        text = text.rstrip("\n") + "\n\n" + new + "\n"
    path.write_text(text)


# ------------------------------------------------------------------------------------------- GPU part
def sdpa_backend(bb: Any, x: Any, cond: Any = None) -> str:
    """The SDPA kernel(s) one UNet call runs, from a profiler trace."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad(), profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        bb.unet_eps(x, bb.n_steps - 1, 5.0, cond=cond)
        torch.cuda.synchronize()
    names = {e.key for e in prof.key_averages()}
    found = [k for k, pat in (("flash", "flash"), ("mem-efficient", "efficient"), ("cudnn", "cudnn"),
                              ("math", "_scaled_dot_product_attention_math")) if any(pat in n for n in names)]  # fmt: skip
    return ", ".join(found) or "none seen"


def measure(row: Row, bb: Any, cfg: Any, n_frames: int, n_labels: int) -> None:
    """Time the stages of ``n_frames`` random frames with planted stripes (after a counted warm-up)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from vidseg_nb.context import SceneContextModel
    from vidseg_nb.features import reference_run
    from vidseg_nb.modulation import modulate
    from vidseg_nb.refine import refine

    w, h = row.size
    gh, gw = h // 16, w // 16
    stripe = np.minimum(np.arange(gw) * n_labels // gw, n_labels - 1)
    frames = np.random.default_rng(0).integers(0, 255, (n_frames, h, w, 3), dtype=np.uint8)
    coarse = np.broadcast_to(stripe[None, None, :], (n_frames, gh, gw)).copy()
    orig_decode, spent = bb.decode, {"decode": 0.0}

    def timed_decode(*a: Any, **k: Any) -> Any:
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = orig_decode(*a, **k)
        torch.cuda.synchronize()
        spent["decode"] += time.perf_counter() - t0
        return out

    def once(frames: np.ndarray, coarse: np.ndarray) -> dict[str, float]:
        spent["decode"] = 0.0
        sec: dict[str, float] = {}
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        ref = reference_run(bb, frames, cfg, record_qk=True, progress=False)
        torch.cuda.synchronize()
        sec["reference run"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        f = ref.features.stage1(True).to(bb.device)
        omega = SceneContextModel.from_config(cfg.replace(n_clusters=n_labels, kmeans_n_init=2))
        m = omega.fit_predict(f)
        if len(frames) > 1:
            refine(m, ref.features.corr.to(bb.device), radius2=cfg.radius2)
        torch.cuda.synchronize()
        sec["stages 1-2"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        modulate(bb, ref, coarse, cfg, progress=False)
        torch.cuda.synchronize()
        sec["decode"] = spent["decode"]
        sec["modulated runs"] = time.perf_counter() - t0 - spent["decode"]
        return sec

    bb.decode = timed_decode
    try:
        g = bb.frames_per_group(n_frames)
        warm = n_frames if g > 1 else 1
        with FlopCounterMode(display=False) as fc:
            once(frames[:warm], coarse[:warm])
        row.tflop_per_frame = fc.get_total_flops() / warm / 1e12
        torch.cuda.reset_peak_memory_stats()
        sec = once(frames, coarse)
        row.peak_gb = torch.cuda.max_memory_allocated() / 2**30
        row.seconds = {k: v / n_frames for k, v in sec.items()}
        row.chunk = cfg.chunk_size or bb.default_chunk(n_frames, modulated=True)
    finally:
        bb.decode = orig_decode


def run_gpu(args: argparse.Namespace, rows: list[Row]) -> tuple[str, list[str]]:
    import torch

    from vidseg_nb.bench import REUSE_OFF, REUSE_ON
    from vidseg_nb.config import SegConfig, preset
    from vidseg_nb.loading import load_backbone

    card = torch.cuda.get_device_name(0)
    notes = [f"torch {torch.__version__}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"]
    cache: dict[str, Any] = {}
    for row in rows:
        key = "random-sd21" if row.model == "SD 2.1" else "random-svd"
        if key not in cache:
            cache.clear()
            torch.cuda.empty_cache()
            cache[key] = load_backbone(key, device="cuda")
        bb = cache[key]
        v = VARIANTS.index(row.variant)
        bb.vae.to(torch.bfloat16 if v >= 2 else torch.float32)
        bb.unet.to(memory_format=torch.channels_last if v >= 3 else torch.contiguous_format)
        if row.variant == "compile":
            bb.unet.compile()  # in place: module names (the probe's sites) stay
        over = REUSE_ON if v >= 1 else REUSE_OFF
        w, h = row.size
        base = SegConfig() if row.model == "SD 2.1" else preset("svd", batch_size=args.svd_frames)
        cfg = base.replace(max_side=max(w, h), **over)
        n = args.frames if row.model == "SD 2.1" else args.svd_frames
        measure(row, bb, cfg, n, args.labels)
        if row.variant == "base":
            x = torch.zeros(1, bb.frames_per_group(n), 4, h // 8, w // 8, device="cuda")
            cond = None
            if row.model == "SVD":
                cond = bb.condition(np.zeros((1, h, w, 3), np.uint8))
            notes.append(f"{row.model} {w}x{h}: SDPA backend {sdpa_backend(bb, x, cond)}")
        print(row, flush=True)
    return card, notes


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rows = planned_rows(args)
    card, notes, peak = None, [NOT_MEASURED + ": no CUDA device on the machine that wrote this table"], None
    if not args.dry_run:
        import torch

        if not torch.cuda.is_available():
            print("no CUDA device: writing the table with 'not measured yet' (--dry-run)", file=sys.stderr)
        else:
            card, notes = run_gpu(args, rows)
            peak = next((p for k, p in BF16_PEAK.items() if k in card), None)
    block = render(rows, card, peak, notes)
    write_block(args.out, block)
    print(block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
