"""NIRVANA video codec and the layer-wise QAT primitive: exact round trips, honest sizes, clear errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from layerwise.cli import main
from layerwise.quant.qat import attach
from layerwise.video import bitstream as bs
from layerwise.video.codec import CodecConfig, decode, decode_chunk, encode
from layerwise.video.data import pan_video
from layerwise.video.net import NetConfig

SMALL_NET = NetConfig(group=2, patch=16, width=16, expand=4)


@pytest.fixture(scope="module")
def clip():
    return pan_video(frames=6, size=32, regimes=((2, 0), (2, 1), (2, 3)))


@pytest.fixture(scope="module")
def encoded(clip):
    return encode(clip, CodecConfig(net=SMALL_NET, iters_first=40, iters_rest=15, lam=1e-3), show_progress=False)


def test_qat_layer_at_16_bits_matches_the_float_layer():
    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 32)
    ref = torch.nn.Linear(64, 32)
    ref.load_state_dict(lin.state_dict())
    qat = attach(lin, bits=16)
    x = torch.randn(8, 64)
    step = float(qat.layers[0].param.scale.detach())
    assert (lin.weight - ref.weight).abs().max() <= step / 2 + 1e-12
    assert torch.allclose(lin(x), ref(x), rtol=0, atol=64 * step)
    assert (lin(x) - ref(x)).abs().max() / ref(x).abs().max() < 1e-4
    # decoded weights sit on the layer's integer grid
    q = qat.integers()[""]
    assert torch.equal(lin.weight.detach(), (q.float() + qat.layers[0].param.shift) * qat.layers[0].param.scale)


def test_qat_trains_a_language_model_with_a_rate_term():
    from layerwise import zoo

    rates = {}
    for lam in (0.0, 3e-2):
        torch.manual_seed(0)
        model = zoo.load("llama-tiny").model
        qat = attach(model, bits=6, select=lambda n, m: ".layers." in n)
        assert len(qat.layers) == 28
        opt = torch.optim.Adam(qat.param_groups(1e-3))
        ids = torch.randint(0, 4096, (4, 32), generator=torch.Generator().manual_seed(0))
        start = float(qat.bits().detach())
        for _ in range(15):
            loss = model(input_ids=ids, labels=ids).loss + lam * qat.bits() / ids.numel() / 1000
            opt.zero_grad()
            loss.backward()
            opt.step()
        rates[lam] = float(qat.bits().detach())
        assert torch.isfinite(loss)
        ints = qat.integers()
        qat.materialize()
        w = model.model.layers[0].mlp.down_proj.weight
        assert not hasattr(model.model.layers[0].mlp.down_proj, "parametrizations")
        assert ints["model.layers.0.mlp.down_proj"].dtype == torch.int64 and w.shape == (128, 344)
        assert rates[lam] < start * 1.05
    assert rates[3e-2] < rates[0.0]


def test_decode_reproduces_the_encoders_reconstruction_bit_for_bit(encoded, tmp_path):
    assert torch.equal(decode(encoded.data), encoded.reconstruction)
    assert torch.equal(decode(encoded.data, processes=2), encoded.reconstruction)
    # through the CLI: the decoder reads only the file
    f = tmp_path / "v.lwv"
    f.write_bytes(encoded.data)
    assert main(["video", "decode", str(f), "--out", str(tmp_path / "frames")]) == 0
    from layerwise.video.data import read_video

    back = read_video(tmp_path / "frames")
    assert torch.equal(back, encoded.reconstruction)


def test_bitstream_size_matches_the_entropy_models_estimate(encoded):
    ideal = sum(g.ideal_bits for g in encoded.groups)
    payload = sum(g.payload_bits for g in encoded.groups)
    assert abs(payload - ideal) <= 0.01 * ideal + 64 * len(encoded.groups)
    # every other bit of the file is accounted for: tables, float16 side information, header and framing
    head_len = int.from_bytes(encoded.data[8:12], "little")
    framing = 8 + 4 + head_len + 8 * len(encoded.groups) + 12
    known = sum(g.payload_bits + g.table_bits + g.side_bits for g in encoded.groups)
    assert 8 * len(encoded.data) == known + 8 * framing


def test_ar_initialisation_with_zero_steps_copies_the_previous_network(clip):
    r = encode(clip, CodecConfig(net=SMALL_NET, iters_first=20, iters_rest=0), show_progress=False)
    header, chunks = bs.read_file(r.data)
    first = decode_chunk(chunks[0], header)
    for k in (1, 2):
        side, residuals = decode_chunk(chunks[k], header)
        assert all(not v.any() for v in residuals)          # the same integers
        assert np.array_equal(side, first[0])                # the same decoders and biases
        assert r.groups[k].nonzero_residuals == 0


def test_residual_and_direct_coding_decode_to_the_same_video(clip):
    cfg = dict(net=SMALL_NET, iters_first=20, iters_rest=5)
    a = encode(clip, CodecConfig(**cfg), show_progress=False)
    b = encode(clip, CodecConfig(residual=False, **cfg), show_progress=False)
    assert torch.equal(a.reconstruction, b.reconstruction)
    assert torch.equal(decode(b.data), b.reconstruction)


def test_posthoc_quantization_anchor_round_trips(clip):
    r = encode(clip, CodecConfig(net=SMALL_NET, iters_first=20, iters_rest=5, qat=False, posthoc_bits=6),
               show_progress=False)
    assert torch.equal(decode(r.data), r.reconstruction)


@pytest.mark.parametrize("cut", [1, 13, 100, -1, -13])
def test_a_truncated_or_altered_bitstream_is_refused(encoded, cut):
    data = encoded.data[:cut] if cut > 0 and cut < 50 else encoded.data[:len(encoded.data) + cut] if cut < 0 \
        else encoded.data[:cut]
    with pytest.raises(bs.BitstreamError):
        decode(data)
    flipped = bytearray(encoded.data)
    flipped[len(flipped) // 2] ^= 0x10
    with pytest.raises(bs.BitstreamError, match="corrupt"):
        decode(bytes(flipped))


@pytest.mark.parametrize("args, needle", [
    (["video", "encode", "test:static16", "--lambda", "-1"], "--lambda"),
    (["video", "encode", "test:nope"], "unknown test video"),
    (["video", "encode", "missing.mp4"], "not found"),
    (["video", "encode", "test:static16", "--patch", "24"], "patch"),
    (["video", "encode", "test:static16", "--max-frames", "0"], "frames"),
])
def test_cli_bad_input(args, needle, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main(args + ["--out", str(tmp_path / "o.lwv")])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o.lwv").exists()


def test_cli_refuses_a_truncated_file(encoded, tmp_path, capsys):
    f = tmp_path / "t.lwv"
    f.write_bytes(encoded.data[: len(encoded.data) // 2])
    code = main(["video", "decode", str(f), "--out", str(tmp_path / "d")])
    err = capsys.readouterr().err
    assert code == 2 and "truncated" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "d").exists()


def test_cli_encode_writes_the_file_and_a_report(tmp_path):
    out = tmp_path / "s.lwv"
    assert main(["video", "encode", "test:static16", "--max-frames", "4", "--iters-first", "10", "--iters-rest", "5",
                 "--width", "16", "--expand", "4", "--out", str(out)]) == 0
    assert out.exists()
    import json

    rep = json.loads(out.with_suffix(".lwv.json").read_text())
    assert rep["bytes"] == out.stat().st_size and rep["psnr"] > 5
    assert (tmp_path / "s.lwv.png").exists()


def test_a_user_video_file_is_read_with_imageio(tmp_path, capsys):
    pytest.importorskip("imageio_ffmpeg", reason="reading video files needs the `video` extra (imageio-ffmpeg)")
    import imageio.v3 as iio

    from layerwise.video.data import read_video

    src = pan_video(frames=8, size=32, regimes=((8, 1),), square=False)
    f = tmp_path / "clip.mp4"
    iio.imwrite(f, (src.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8), fps=8, codec="libx264",
                macro_block_size=1, plugin="FFMPEG")
    v = read_video(f)
    assert v.shape == (8, 3, 32, 32) and 0 <= float(v.min()) and float(v.max()) <= 1
    assert float((v - src).abs().mean()) < 0.05          # lossy, but the same pictures
    assert main(["video", "encode", str(f), "--iters-first", "5", "--iters-rest", "2", "--width", "8", "--expand", "2",
                 "--out", str(tmp_path / "c.lwv")]) == 0
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00not a video" * 10)
    capsys.readouterr()
    assert main(["video", "encode", str(bad), "--out", str(tmp_path / "b.lwv")]) == 2
    err = capsys.readouterr().err
    assert "cannot read video" in err and len(err.strip().splitlines()) == 1, err
