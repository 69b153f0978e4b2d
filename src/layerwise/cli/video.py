from __future__ import annotations

from typing import Optional

import typer

from ..console import console
from .app import app

video_app = typer.Typer(help="Video compression with per-group implicit neural representations (NIRVANA).",
                        no_args_is_help=True)
app.add_typer(video_app, name="video")


@video_app.command("encode")
def video_encode(
    source: str = typer.Argument(..., help="A video file (imageio/ffmpeg), a directory of PNG frames, or test:NAME "
                                           "(pan48, static16, pan48-128: procedural, made here)."),
    out: str = typer.Option(..., "--out", "-o", help="The bitstream file to write (FILE.json and FILE.png beside)."),
    lam: float = typer.Option(1e-3, "--lambda", help="Rate weight λ: loss = MSE + λ·bits per pixel."),
    group: int = typer.Option(4, "--group", help="Frames per network."),
    patch: int = typer.Option(16, "--patch", help="Patch side; must divide the frame height and width."),
    width: int = typer.Option(64, "--width", help="SIREN width."),
    expand: int = typer.Option(8, "--expand", help="Channels of the expanded map."),
    iters_first: int = typer.Option(1500, "--iters-first", help="Training iterations of the first group."),
    iters_rest: int = typer.Option(300, "--iters-rest", help="Training iterations of every later group."),
    lr: float = typer.Option(1e-3, "--lr", help="Adam learning rate in weight units."),
    rate: str = typer.Option("latent", "--rate", help="latent (NIRVANA: price the integers) | residual (price "
                                                      "what is coded: the change from the previous group)."),
    no_ar: bool = typer.Option(False, "--no-ar", help="Start every group from a fresh network."),
    direct: bool = typer.Option(False, "--direct", help="Code each group's integers, not residuals."),
    posthoc_bits: Optional[int] = typer.Option(None, "--posthoc-bits", help="Anchor: train in float without a "
                                                                             "rate term, then quantize to N bits."),
    max_frames: Optional[int] = typer.Option(None, "--max-frames", help="Encode only the first N frames."),
    seed: int = typer.Option(0, "--seed"),
    overwrite: bool = typer.Option(False, "--overwrite"),
):
    """Compress a video into one bitstream file.

    Example: layerwise video encode test:pan48 --lambda 1e-3 --out runs/pan48.lwv
    """
    from ..pipeline.video import encode_file
    from ..video.codec import CodecConfig
    from ..video.net import NetConfig

    cfg = CodecConfig(net=NetConfig(group=group, patch=patch, width=width, expand=expand), lam=lam,
                      iters_first=iters_first, iters_rest=iters_rest, lr=lr, rate=rate, ar_init=not no_ar,
                      residual=not direct, qat=posthoc_bits is None, posthoc_bits=posthoc_bits or 8, seed=seed)
    rep = encode_file(source, out, cfg, max_frames=max_frames, overwrite=overwrite)
    console.print(f"{out}: PSNR {rep['psnr']:.2f} dB, {rep['bpp']:.4f} bpp (payload {rep['payload_bpp']:.4f}, "
                  f"side information {rep['side_bpp']:.4f}), {rep['bytes']:,} bytes, "
                  f"encode {rep['encode_seconds']:.1f} s; report {out}.json, {out}.png")


@video_app.command("decode")
def video_decode(
    bitstream: str = typer.Argument(..., help="A file written by `layerwise video encode`."),
    out: str = typer.Option(..., "--out", "-o", help="Directory for the decoded frames (PNG)."),
    processes: int = typer.Option(1, "--processes", help="Worker processes evaluating the groups' networks."),
    overwrite: bool = typer.Option(False, "--overwrite"),
):
    """Reconstruct the frames of a bitstream; reads nothing but that file.

    Example: layerwise video decode runs/pan48.lwv --out runs/pan48-frames
    """
    from ..pipeline.video import decode_file

    rep = decode_file(bitstream, out, processes=processes, overwrite=overwrite)
    console.print(f"{rep['out']}: {rep['frames']} frames, decoded in {rep['seconds']:.2f} s")
