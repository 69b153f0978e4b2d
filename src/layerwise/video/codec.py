"""NIRVANA video codec: one small network per group of frames, trained with quantization-aware training
and a rate term, initialised from the previous group's network, its integer weights coded as residuals
against the previous group's with a range coder (../shared/methods/quant_inr_rl.md §2.4).

The encoder measures the reconstruction by decoding its own chunk with the decoder's function, so
`decode(encode(x))` reproduces that reconstruction bit for bit (both evaluate each network on one thread,
so the float sums run in one order). Frames are compared and written as 8-bit RGB.

Anchors built on the same code: `qat=False` trains the same networks in float (no rate term) and
quantizes each weight tensor afterwards to `posthoc_bits` bits, coded the same way; `ar_init=False`
starts every group from a fresh initialisation; `residual=False` codes each group's integers directly.
"""
from __future__ import annotations

import io
import math
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from ..console import progress_bar
from ..errors import ConfigError
from ..quant.qat import QATModel, attach
from . import bitstream as bs
from .data import psnr
from .net import NetConfig, NirvanaNet, patch_coords, patchify, unpatchify

VERSION = 1


@dataclass
class CodecConfig:
    net: NetConfig = field(default_factory=NetConfig)
    lam: float = 1e-3            # λ: weight of bits per pixel against the MSE on [0, 1] pixels
    iters_first: int = 1500
    iters_rest: int = 300
    lr: float = 1e-3             # Adam, in weight units (latents move lr / step integers per step)
    decoder_lr: float = 1e-3     # decoders (log step, shift) and entropy models
    beta: float = 16.0           # latent range at initialisation (decoded ≈ U(−r, r) with step r / β)
    beta_first: float = 256.0    # the coordinate layer: a coarse step there destroys frequency content
    ar_init: bool = True
    residual: bool = True
    qat: bool = True
    posthoc_bits: int = 8        # qat=False: bits of the post-hoc uniform quantization
    rate: str = "latent"         # what the rate term prices: the integers (NIRVANA) or their residuals against
                                 # the previous group's ("residual": what is actually coded; not in the paper)
    seed: int = 0

    def check(self) -> None:
        if not (isinstance(self.lam, (int, float)) and math.isfinite(self.lam) and self.lam >= 0):
            raise ConfigError(f"--lambda must be a number ≥ 0 (got {self.lam})")
        if self.iters_first < 0 or self.iters_rest < 0:
            raise ConfigError("iteration counts must be ≥ 0")
        if not 2 <= self.posthoc_bits <= 16:
            raise ConfigError(f"post-hoc bits must be within 2-16 (got {self.posthoc_bits})")
        if self.rate not in ("latent", "residual"):
            raise ConfigError(f"rate must be 'latent' or 'residual' (got {self.rate!r})")
        if self.beta <= 0 or self.beta_first <= 0:
            raise ConfigError("latent ranges (beta) must be positive")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["net"] = self.net.to_dict()
        return d


@dataclass
class GroupStats:
    index: int
    iterations: int
    psnr: float                    # of the decoded (8-bit) reconstruction
    payload_bits: int              # range-coded words
    table_bits: int                # categorical models
    side_bits: int                 # float16 decoders and biases
    ideal_bits: float              # Σ −log2 p under the coded models
    estimated_bits: float          # the learned entropy models' estimate of the integers (training rate)
    nonzero_residuals: int
    seconds: float
    direct_bits: float             # the same integers coded directly (ideal + tables), for residual vs direct
    curve: list[float] = field(default_factory=list)   # training PSNR (quantized weights) every iteration


@dataclass
class EncodeResult:
    data: bytes
    reconstruction: torch.Tensor   # [T, 3, H, W], 8-bit values / 255
    groups: list[GroupStats]
    config: CodecConfig
    seconds: float
    frames: int
    height: int
    width: int

    @property
    def bpp(self) -> float:
        return 8 * len(self.data) / (self.frames * self.height * self.width)

    def summary(self, source: torch.Tensor) -> dict:
        pixels = self.frames * self.height * self.width
        payload = sum(g.payload_bits for g in self.groups)
        return {"psnr": psnr(self.reconstruction, source), "bpp": self.bpp, "bytes": len(self.data),
                "payload_bpp": payload / pixels,
                "side_bpp": (8 * len(self.data) - payload) / pixels,
                "ideal_payload_bits": sum(g.ideal_bits for g in self.groups), "payload_bits": payload,
                "estimated_bits": sum(g.estimated_bits for g in self.groups),
                "encode_seconds": self.seconds, "groups": len(self.groups),
                "bits_per_group": [g.payload_bits + g.table_bits + g.side_bits for g in self.groups]}


@contextmanager
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def to_8bit(x: torch.Tensor) -> torch.Tensor:
    return torch.round(x.clamp(0, 1) * 255) / 255


def _layer_names(net: NirvanaNet) -> list[str]:
    return [n for n, m in net.named_modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]


def _groups(video: torch.Tensor, G: int) -> list[torch.Tensor]:
    out = []
    for k in range(0, video.shape[0], G):
        g = video[k:k + G]
        if g.shape[0] < G:       # the last group repeats its last frame
            g = torch.cat([g, g[-1:].expand(G - g.shape[0], -1, -1, -1)])
        out.append(g)
    return out


def _fresh(cfg: CodecConfig, k: int) -> tuple[NirvanaNet, QATModel | None]:
    torch.manual_seed(cfg.seed * 1000 + k)
    net = NirvanaNet(cfg.net)
    if not cfg.qat:
        return net, None
    ranges = net.init_ranges()
    qat = attach(net, bits=None, init=lambda name, m: (ranges[name], cfg.beta_first if name == "stem.0.linear"
                                                        else cfg.beta))
    return net, qat


def _side_floats(net: NirvanaNet, qat: QATModel | None, names: list[str], ints: dict) -> np.ndarray:
    """[step, shift per layer] + every bias, as the float16 values the decoder will use."""
    mods = dict(net.named_modules())
    vals = []
    for n in names:
        if qat is not None:
            p = mods[n].parametrizations.weight[0]
            vals += [float(p.scale.detach()), float(p.shift.detach())]
        else:
            vals += [ints[n][1], 0.0]
    for n in names:
        vals += mods[n].bias.detach().reshape(-1).tolist()
    return np.asarray(vals, dtype=np.float16)


def _posthoc(net: NirvanaNet, names: list[str], bits: int) -> dict:
    mods = dict(net.named_modules())
    out = {}
    for n in names:
        W = mods[n].weight.detach()
        step = float(W.abs().max()) / (2 ** (bits - 1) - 1) or 1e-8
        step = float(np.float16(step)) or float(np.finfo(np.float16).tiny)
        out[n] = (torch.round(W / step).to(torch.int64), step)
    return out


def _chunk(side: np.ndarray, values: list[np.ndarray]) -> tuple[bytes, list[bs.CodedLayer]]:
    buf = io.BytesIO()
    bs.put_floats(buf, side)
    coded = [bs.fit_model(v) for v in values]
    for c in coded:
        buf.write(c.table)
    buf.write(bs.range_encode(coded))
    return buf.getvalue(), coded


def decode_chunk(chunk: bytes, header: dict) -> tuple[np.ndarray, list[np.ndarray]]:
    """Side floats and the coded integers (residuals or direct) of one group."""
    shapes = header["layers"]
    n_side = 2 * len(shapes) + sum(header["biases"])
    data = memoryview(chunk)
    side, pos = bs.get_floats(data, 0, n_side)
    models = []
    for _, shape in shapes:
        sym, probs, pos = bs.read_model(data, pos)
        models.append((sym, probs, int(np.prod(shape))))
    try:
        values = bs.range_decode(bytes(data[pos:]), models)
    except Exception as e:   # the coder's own errors on words that do not decode
        raise bs.BitstreamError(f"bitstream words do not decode: {e}") from e
    return side, values


def build_net(header: dict, ints: list[np.ndarray], side: np.ndarray) -> NirvanaNet:
    """The plain float network a group decodes to: W = (Q + shift)·step, biases from float16."""
    net = NirvanaNet(NetConfig(**header["net"]))
    mods = dict(net.named_modules())
    names = [n for n, _ in header["layers"]]
    pos = 2 * len(names)
    with torch.no_grad():
        for i, (n, shape) in enumerate(header["layers"]):
            step, shift = torch.tensor(float(side[2 * i])), torch.tensor(float(side[2 * i + 1]))
            q = torch.from_numpy(ints[i].reshape(shape)).float()
            mods[n].weight.copy_((q + shift) * step)
        for n, size in zip(names, header["biases"]):
            mods[n].bias.copy_(torch.from_numpy(side[pos:pos + size].copy()))
            pos += size
    return net.eval()


def render(header: dict, ints: list[np.ndarray], side: np.ndarray) -> torch.Tensor:
    """[G, 3, H, W] 8-bit reconstruction of one group (one thread: the same sums in every process)."""
    H, W = header["height"], header["width"]
    with one_thread(), torch.no_grad():
        net = build_net(header, ints, side)
        out = net(patch_coords(H, W, header["net"]["patch"]))
    return to_8bit(unpatchify(out, H, W))


def encode(video: torch.Tensor, cfg: CodecConfig | None = None, *, show_progress: bool = True) -> EncodeResult:
    """Compress `video` [T, 3, H, W] in [0, 1]; returns the file's bytes and what it decodes to."""
    cfg = cfg or CodecConfig()
    cfg.check()
    if video.dim() != 4 or video.shape[1] != 3:
        raise ConfigError(f"a video is [frames, 3, height, width]; got shape {tuple(video.shape)}")
    T, _, H, W = video.shape
    if T == 0:
        raise ConfigError("the video has zero frames")
    if not torch.isfinite(video).all():
        raise ConfigError("the video has NaN or infinite pixel values")
    cfg.net.check(H, W)
    video = to_8bit(video.float())
    G, P = cfg.net.group, cfg.net.patch
    groups = _groups(video, G)
    coords = patch_coords(H, W, P)
    probe = NirvanaNet(cfg.net)
    names = _layer_names(probe)
    mods = dict(probe.named_modules())
    header = {"version": VERSION, "frames": T, "height": H, "width": W, "groups": len(groups),
              "net": cfg.net.to_dict(), "residual": cfg.residual,
              "layers": [(n, list(mods[n].weight.shape)) for n in names],
              "biases": [mods[n].bias.numel() for n in names]}
    chunks, stats, recon = [], [], []
    prev_state, prev_ints = None, [np.zeros(int(np.prod(s)), dtype=np.int64) for _, s in header["layers"]]
    t_all = time.perf_counter()
    with progress_bar() as prog:
        task = prog.add_task("encoding groups", total=len(groups), info="") if show_progress else None
        for k, frames in enumerate(groups):
            prev_state, prev_ints = _encode_group(k, frames, cfg, header, names, coords, prev_state, prev_ints,
                                                  chunks, stats, recon)
            if task is not None:
                prog.update(task, advance=1, info=f"{stats[-1].psnr:.2f} dB")
    data = bs.write_file(header, chunks)
    return EncodeResult(data, torch.cat(recon)[:T], stats, cfg, time.perf_counter() - t_all, T, H, W)


def _encode_group(k, frames, cfg, header, names, coords, prev_state, prev_ints, chunks, stats, recon):
    """Train, quantize, code and decode one group; appends to chunks/stats/recon; returns the state the next
    group starts from."""
    H, W, G, P = header["height"], header["width"], cfg.net.group, cfg.net.patch
    t0 = time.perf_counter()
    net, qat = _fresh(cfg, k)
    if cfg.ar_init and prev_state is not None:
        net.load_state_dict(prev_state)
    iters = cfg.iters_first if k == 0 or not cfg.ar_init else cfg.iters_rest
    base = None
    if qat is not None and cfg.rate == "residual" and cfg.residual:
        base = {n: torch.from_numpy(p).view(header["layers"][i][1]).float() for i, (n, p) in enumerate(zip(names, prev_ints))}
    curve = _train(net, qat, coords, patchify(frames, P), iters, cfg, H * W * G, base)
    if qat is not None:
        with torch.no_grad():
            estimated = float(qat.bits())
            for lay in qat:   # what the decoder gets: float16 step, shift and biases
                lay.param.log_scale.copy_(torch.log(torch.tensor(float(np.float16(float(lay.param.scale))))))
                lay.param.shift.copy_(torch.tensor(float(np.float16(float(lay.param.shift)))))
        ints = qat.integers()
        side = _side_floats(net, qat, names, ints)
    else:
        estimated = float("nan")
        post = _posthoc(net, names, cfg.posthoc_bits)
        ints = {n: q for n, (q, _) in post.items()}
        side = _side_floats(net, None, names, post)
    mods_k = dict(net.named_modules())
    with torch.no_grad():
        for n in names:
            mods_k[n].bias.copy_(mods_k[n].bias.half().float())
    flat = [ints[n].reshape(-1).numpy() for n in names]
    coded_values = [f - p for f, p in zip(flat, prev_ints)] if cfg.residual else flat
    chunk, coded = _chunk(side, coded_values)
    # measure what the decoder will see: decode our own chunk
    side_d, values_d = decode_chunk(chunk, header)
    ints_d = [v + p for v, p in zip(values_d, prev_ints)] if cfg.residual else values_d
    out = render(header, ints_d, side_d)
    recon.append(out)
    table_bits = 8 * sum(len(c.table) for c in coded)
    side_bits = 16 * len(side)
    direct = [bs.fit_model(v) for v in ints_d]
    stats.append(GroupStats(k, iters, psnr(out, frames), 8 * len(chunk) - table_bits - side_bits, table_bits,
                            side_bits, sum(c.ideal_bits for c in coded), estimated,
                            int(sum(int((v != 0).sum()) for v in coded_values)), time.perf_counter() - t0,
                            sum(c.ideal_bits + 8 * len(c.table) for c in direct), curve))
    chunks.append(chunk)
    return {k_: v.detach().clone() for k_, v in net.state_dict().items()}, ints_d


def _rate(qat: QATModel, base: dict | None) -> torch.Tensor:
    if base is None:
        return qat.bits()
    from ..quant.qat import round_ste

    return torch.stack([lay.param.prob.bits(round_ste(lay.latent) - base[lay.name]) for lay in qat]).sum()


def _train(net: NirvanaNet, qat: QATModel | None, coords, target, iters: int, cfg: CodecConfig,
           pixels: int, base: dict | None = None) -> list[float]:
    if iters == 0:
        return []
    if qat is not None:
        groups = qat.param_groups(cfg.lr, cfg.decoder_lr)
    else:
        groups = [{"params": list(net.parameters()), "lr": cfg.lr}]
    opt = torch.optim.Adam(groups)
    curve = []
    for _ in range(iters):
        pred = net(coords)
        mse = ((pred - target) ** 2).mean()
        loss = mse
        if qat is not None:
            loss = loss + cfg.lam * _rate(qat, base) / pixels
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        curve.append(float(10 * torch.log10(1 / mse.detach().clamp_min(1e-12))))
    return curve


def _render_job(args):
    header, ints, side = args
    return render(header, ints, side)


def decode(data: bytes, *, processes: int = 1, name: str = "bitstream") -> torch.Tensor:
    """The video a bitstream encodes, [T, 3, H, W]. Entropy decoding runs in order (residuals chain the
    groups); the networks are then evaluated in `processes` worker processes."""
    header, chunks = bs.read_file(data, name)
    if header.get("version") != VERSION:
        raise bs.BitstreamError(f"{name} has format version {header.get('version')}; this layerwise reads {VERSION}")
    prev = [np.zeros(int(np.prod(s)), dtype=np.int64) for _, s in header["layers"]]
    jobs = []
    for chunk in chunks:
        side, values = decode_chunk(chunk, header)
        ints = [v + p for v, p in zip(values, prev)] if header["residual"] else values
        jobs.append((header, ints, side))
        prev = ints
    if processes > 1 and len(jobs) > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(processes) as pool:
            frames = pool.map(_render_job, jobs)
    else:
        frames = [_render_job(j) for j in jobs]
    return torch.cat(frames)[:header["frames"]]
