"""`layerwise video encode / decode`: the NIRVANA codec on files, with a report.

encode writes FILE (the bitstream), FILE.json (PSNR, bits per pixel, encode time, per-group bits,
motion and PSNR) and FILE.png (per-group bits against motion, PSNR per group, first/last frames
beside their reconstructions); all three appear only when complete. decode reads only FILE and writes
one PNG per frame into a new directory (through the artifact layer: nothing half-written).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from ..console import info
from ..errors import ConfigError
from ..io.artifacts import Artifact, check_not_overlapping, io_reason
from ..video.codec import CodecConfig, EncodeResult, decode, encode
from ..video.data import motion, read_video


def encode_file(src: str, out: str | Path, cfg: CodecConfig, *, max_frames: int | None = None,
                overwrite: bool = False, show_progress: bool = True) -> dict:
    out = Path(out).expanduser()
    if max_frames is not None and max_frames < 1:
        raise ConfigError(f"--max-frames must be at least 1 (got {max_frames})")
    cfg.check()
    if not src.startswith("test:"):
        check_not_overlapping(out, [("the video", src)])
    if out.is_dir():
        raise ConfigError(f"--out {out} is a directory; give a file name")
    if out.exists() and not overwrite:
        raise ConfigError(f"{out} already exists; pass --overwrite to replace it")
    if not out.parent.exists():
        raise ConfigError(f"parent directory of --out {out} does not exist")
    video = read_video(src, max_frames)
    res = encode(video, cfg, show_progress=show_progress)
    report = _report(res, video, src)
    files = {out: res.data, out.with_name(out.name + ".json"): (json.dumps(report, indent=1) + "\n").encode()}
    tmps = {p: p.with_name(f".{p.name}.partial") for p in list(files) + [out.with_name(out.name + ".png")]}
    try:
        for p, data in files.items():
            tmps[p].write_bytes(data)
        _plot(res, video, report, tmps[out.with_name(out.name + ".png")])
        for p, t in tmps.items():
            os.replace(t, p)
    except OSError as e:
        reason = io_reason(e)
        raise ConfigError(f"cannot write {out}: {reason or e}; nothing was written") from e
    finally:
        for t in tmps.values():
            t.unlink(missing_ok=True)
    info(f"wrote {out}: {report['frames']} frames {report['height']}×{report['width']}, PSNR {report['psnr']:.2f} dB, "
         f"{report['bpp']:.3f} bits per pixel ({report['bytes']:,} bytes), encoded in {report['encode_seconds']:.1f} s")
    return report


def _report(res: EncodeResult, video: torch.Tensor, src: str) -> dict:
    s = res.summary(video)
    mot = motion(video, res.config.net.group)
    per = [{"group": g.index, "psnr": g.psnr, "bits": g.payload_bits + g.table_bits + g.side_bits,
            "payload_bits": g.payload_bits, "table_bits": g.table_bits, "side_bits": g.side_bits,
            "ideal_bits": g.ideal_bits, "estimated_bits": g.estimated_bits, "iterations": g.iterations,
            "nonzero_residuals": g.nonzero_residuals, "seconds": g.seconds, "motion": mot[g.index]}
           for g in res.groups]
    return {"source": src, "frames": res.frames, "height": res.height, "width": res.width, **s,
            "config": res.config.to_dict(), "per_group": per}


def _plot(res: EncodeResult, video: torch.Tensor, report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per = report["per_group"]
    fig = plt.figure(figsize=(11, 6.5))
    ax = fig.add_subplot(2, 2, 1)
    ax.bar([p["group"] for p in per], [p["bits"] / 1000 for p in per], color="#4477aa")
    ax.set_xlabel("group")
    ax.set_ylabel("kbit")
    ax2 = ax.twinx()
    ax2.plot([p["group"] for p in per], [p["motion"] for p in per], "o-", color="#cc6677")
    ax2.set_ylabel("motion (mean |Δpixel|)", color="#cc6677")
    ax.set_title("bits per group vs motion")
    ax = fig.add_subplot(2, 2, 2)
    ax.plot([p["group"] for p in per], [p["psnr"] for p in per], "o-")
    ax.set_xlabel("group")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title(f"PSNR {report['psnr']:.2f} dB at {report['bpp']:.3f} bpp")
    for i, t in enumerate((0, res.frames - 1)):
        ax = fig.add_subplot(2, 2, 3 + i)
        pair = torch.cat([video[t], res.reconstruction[t]], dim=2).permute(1, 2, 0).clamp(0, 1).numpy()
        ax.imshow(pair)
        ax.set_title(f"frame {t}: source | decoded")
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=90)
    plt.close(fig)


def decode_file(src: str | Path, out: str | Path, *, processes: int = 1, overwrite: bool = False) -> dict:
    src = Path(src).expanduser()
    if not src.exists() or not src.is_file():
        raise ConfigError(f"bitstream not found: {src}")
    if processes < 1:
        raise ConfigError(f"--processes must be at least 1 (got {processes})")
    data = src.read_bytes()
    t0 = time.perf_counter()
    frames = decode(data, processes=processes, name=str(src))
    seconds = time.perf_counter() - t0
    import imageio.v3 as iio

    art = Artifact(out, inputs=[("the bitstream", src)], overwrite=overwrite)
    with art.writing() as tmp:
        for i, f in enumerate(frames):
            iio.imwrite(tmp / f"frame_{i:05d}.png", (f.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    info(f"wrote {out}: {frames.shape[0]} frames decoded in {seconds:.2f} s ({processes} process(es))")
    return {"frames": int(frames.shape[0]), "seconds": seconds, "out": str(out)}
