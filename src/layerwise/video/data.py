"""Videos to compress: procedurally moving textures made here, and user videos read with imageio.

The test video of the NIRVANA setting (`test:pan48`): 48 frames of 64×64 RGB cut from a texture that
scikit-image ships (the astronaut photograph), in three motion regimes so that variable bitrate can be
checked — frames 0–15 static, 16–31 a slow pan (1 px/frame), 32–47 a fast pan (3 px/frame) with a
square moving across it. `test:NAME` names are generated on the fly, deterministic, never downloaded.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError

TEXTURES = ("astronaut", "coffee", "chelsea", "rocket")


def texture(name: str = "astronaut", size: int = 192) -> np.ndarray:
    """An RGB image in [0, 1] of `size`×`size` from scikit-image's bundled data."""
    import skimage.data
    from skimage.transform import resize

    if name not in TEXTURES:
        raise ConfigError(f"unknown texture '{name}'; choose one of {', '.join(TEXTURES)}")
    img = getattr(skimage.data, name)().astype(np.float32) / 255.0
    h, w = img.shape[:2]
    side = min(h, w)
    img = img[(h - side) // 2:(h - side) // 2 + side, (w - side) // 2:(w - side) // 2 + side]
    return resize(img, (size, size), anti_aliasing=True, order=1).astype(np.float32)


def pan_video(frames: int = 48, size: int = 64, texture_name: str = "astronaut",
              regimes: tuple[tuple[int, int], ...] = ((16, 0), (16, 1), (16, 3)), square: bool = True) -> torch.Tensor:
    """[T, 3, size, size] in [0, 1]: a crop of the texture moved by `regimes` ((frames, px per frame), ...);
    in the last regime a square moves across the frame as well."""
    if sum(n for n, _ in regimes) < frames:
        raise ConfigError(f"the motion regimes cover {sum(n for n, _ in regimes)} frames, fewer than {frames}")
    travel = sum(n * v for n, v in regimes)
    tex = texture(texture_name, size + travel + 8)
    out, x = [], 4
    last = len(regimes) - 1
    t = 0
    for r, (n, v) in enumerate(regimes):
        for i in range(n):
            if t == frames:
                break
            f = tex[4:4 + size, x:x + size].copy()
            if square and r == last and v > 0:
                s = size // 6
                pos = int((i * (size - s)) / max(n - 1, 1))
                f[size // 3:size // 3 + s, pos:pos + s] = (0.95, 0.2, 0.1)
            out.append(f)
            x += v
            t += 1
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()


TEST_VIDEOS = {
    "pan48": lambda: pan_video(48, 64),
    "static16": lambda: pan_video(16, 64, regimes=((16, 0),), square=False),
    "pan48-128": lambda: pan_video(48, 128),
}


def read_video(spec: str | Path, max_frames: int | None = None) -> torch.Tensor:
    """`test:NAME` or a video file (anything imageio's ffmpeg plugin reads) → [T, 3, H, W] float in [0, 1]."""
    spec = str(spec)
    if spec.startswith("test:"):
        name = spec[5:]
        if name not in TEST_VIDEOS:
            raise ConfigError(f"unknown test video '{name}'; choose one of {', '.join(TEST_VIDEOS)}")
        v = TEST_VIDEOS[name]()
    else:
        p = Path(spec).expanduser()
        if not p.exists():
            raise ConfigError(f"video not found: {p}")
        v = _read_file(p, max_frames)
    if max_frames is not None:
        v = v[:max_frames]
    if v.shape[0] == 0:
        raise ConfigError(f"{spec} has no frames")
    return v


def _read_file(p: Path, max_frames: int | None) -> torch.Tensor:
    if p.is_dir():                        # a directory of frames (what `layerwise video decode` writes)
        import imageio.v3 as iio

        files = sorted(f for f in p.iterdir() if f.suffix.lower() in (".png", ".jpg", ".jpeg"))
        frames = [iio.imread(f) for f in files[:max_frames]]
    else:
        frames = _read_with_ffmpeg(p, max_frames)
    if not frames:
        raise ConfigError(f"{p} has no frames")
    arr = np.stack([f[..., :3] if f.ndim == 3 else np.repeat(f[..., None], 3, -1) for f in frames])
    return torch.from_numpy(arr.astype(np.float32) / 255.0).permute(0, 3, 1, 2).contiguous()


def _read_with_ffmpeg(p: Path, max_frames: int | None) -> list[np.ndarray]:
    import imageio.v3 as iio

    try:
        frames = []
        for i, f in enumerate(iio.imiter(p)):
            if max_frames is not None and i >= max_frames:
                break
            frames.append(np.asarray(f))
        return frames
    except Exception as e:  # imageio raises many types for unreadable files and missing plugins
        raise ConfigError(f"cannot read video {p}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} "
                          "(imageio reads video files through its ffmpeg or pyav plugin: "
                          "pip install imageio-ffmpeg)") from e


def motion(video: torch.Tensor, group: int) -> list[float]:
    """Mean absolute pixel change between consecutive frames inside each group of `group` frames (and from
    the previous group's last frame), per group: the motion the codec's bits are compared against."""
    diffs = (video[1:] - video[:-1]).abs().mean(dim=(1, 2, 3))
    out = []
    for k in range(0, video.shape[0], group):
        d = diffs[max(k - 1, 0):min(k + group - 1, len(diffs))]
        out.append(float(d.mean()) if len(d) else 0.0)
    return out


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over frames of 10·log10(1 / MSE) for videos in [0, 1]."""
    mse = ((a.clamp(0, 1) - b.clamp(0, 1)) ** 2).mean(dim=(1, 2, 3)).clamp_min(1e-12)
    return float((10 * torch.log10(1 / mse)).mean())
