import subprocess
import wave

import numpy as np
import pytest
import torch
from PIL import Image

from mtransfer.media import MediaError, find_bad_inputs, format_bad_inputs, load_audio, load_image, media_fingerprint
from tests.tiny import tone


def write_wav(path, samples, rate, channels=1):
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.T.reshape(-1).tobytes() if channels > 1 else pcm.tobytes())


def test_image_modes_become_rgb(tmp_path, monkeypatch):
    import mtransfer.media

    monkeypatch.setattr(mtransfer.media, "_WARNED_WIDE", False)  # said once per process: maybe already said
    rgb = np.random.default_rng(0).integers(0, 255, (8, 9, 3)).astype(np.uint8)
    gray = Image.fromarray(rgb[..., 0])
    assert load_image(gray).mode == "RGB" and np.array_equal(np.asarray(load_image(gray))[..., 2], rgb[..., 0])
    palette = Image.fromarray(rgb).convert("P")
    assert np.array_equal(np.asarray(load_image(palette)), np.asarray(palette.convert("RGB")))
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:2, :, 3] = 255  # top half opaque red, bottom half transparent
    out = np.asarray(load_image(Image.fromarray(rgba, "RGBA")))
    # as transformers' load_image (and a pipeline on the export): the alpha channel is dropped, the colour under a
    # transparent pixel stays
    assert out[0, 0].tolist() == [200, 0, 0] and out[3, 0].tolist() == [200, 0, 0]
    cmyk = Image.fromarray(rgb).convert("CMYK")
    assert load_image(cmyk).mode == "RGB"
    deep = Image.fromarray(rgb[..., 0].astype(np.uint16) * 200)
    with pytest.warns(UserWarning, match="values up to .*clipped at 255. Convert such images to 8-bit"):
        assert load_image(deep).mode == "RGB"
    p = tmp_path / "g.png"
    gray.save(p)
    assert load_image(p).size == (9, 8)


def test_image_arrays_in_every_layout():
    hwc = np.random.default_rng(1).integers(0, 255, (5, 6, 3)).astype(np.uint8)
    ref = np.asarray(load_image(hwc))
    assert np.array_equal(np.asarray(load_image(np.moveaxis(hwc, -1, 0))), ref)  # CHW
    assert np.array_equal(np.asarray(load_image(torch.from_numpy(hwc).permute(2, 0, 1))), ref)
    assert np.array_equal(np.asarray(load_image(hwc.astype(np.float64) / 255)), ref)
    assert load_image(hwc[..., 0]).size == (6, 5)
    with pytest.raises(MediaError, match=r"must be HxW, HxWxC or CxHxW with 1, 3 or 4 channels; got shape \(5, 6, 7\)"):
        load_image(np.zeros((5, 6, 7), np.uint8))
    with pytest.raises(MediaError, match=r"float image array must hold values in \[0, 1\]"):
        load_image(np.full((4, 4, 3), 2.0))
    with pytest.raises(MediaError, match="expected an image path, a PIL image"):
        load_image(3.5)


def test_bad_image_files_are_named(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 40)
    (tmp_path / "text.png").write_text("hello")
    good = np.zeros((20, 20, 3), np.uint8)
    Image.fromarray(good).save(tmp_path / "cut.png")
    data = (tmp_path / "cut.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])  # truncated
    cases = {"empty.png": "the file is empty", "bad.jpg": "", "text.png": "not an image Pillow can read",
             "missing.png": "no such image file", "cut.png": ""}
    for name, reason in cases.items():
        with pytest.raises(MediaError) as err:
            load_image(tmp_path / name)
        assert str(err.value).startswith(str(tmp_path / name)) and reason in str(err.value)
    with pytest.raises(MediaError, match="is a folder"):
        load_image(tmp_path)


def test_audio_files_in_every_format_decode_alike(tmp_path):
    wav = tone(1.0, 22050)[0].numpy()
    write_wav(tmp_path / "a.wav", wav, 22050)
    for ext in ("flac", "ogg", "mp3"):
        subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(tmp_path / "a.wav"), str(tmp_path / f"a.{ext}")], check=True)
    ref = load_audio(tmp_path / "a.wav", 16000)
    assert ref.shape == (16000,) and ref.dtype == torch.float32
    for ext, tol in (("flac", 1e-4), ("ogg", 0.05), ("mp3", 0.05)):
        got = load_audio(str(tmp_path / f"a.{ext}"), 16000)
        n = min(len(got), len(ref))
        assert abs(len(got) - len(ref)) < 1200, ext  # codec padding at most a frame
        if ext == "flac":
            assert torch.allclose(got[:n], ref[:n], atol=tol)
    as_bytes = load_audio({"bytes": (tmp_path / "a.wav").read_bytes(), "path": "a.wav"}, 16000)
    assert torch.equal(as_bytes, ref)
    assert torch.equal(load_audio({"path": str(tmp_path / "a.wav")}, 16000), ref)


def test_audio_arrays_channels_and_rates():
    stereo = tone(1.0, 8000, channels=2)
    mono = load_audio((stereo, 8000), 16000)
    assert mono.shape == (16000,)
    assert torch.allclose(load_audio((stereo.T.numpy(), 8000), 16000), mono)  # (samples, channels) layout too
    assert torch.allclose(load_audio({"array": stereo[0].numpy(), "sampling_rate": 8000}, 16000), mono, atol=1e-6)
    same = tone(1.0, 16000)[0]
    assert torch.equal(load_audio(same, 16000), same)  # a bare array is at the model's rate
    with pytest.raises(MediaError, match="the audio has no samples"):
        load_audio((np.zeros(0), 16000), 16000)
    with pytest.raises(MediaError, match="NaN or infinite"):
        load_audio((np.array([0.0, np.nan]), 16000), 16000)
    with pytest.raises(MediaError, match="needs 'sampling_rate'"):
        load_audio({"array": [0.1, 0.2]}, 16000)
    with pytest.raises(MediaError, match="a waveform must be 1-D"):
        load_audio((np.zeros((2, 2, 2)), 16000), 16000)


def test_bad_audio_files_are_named(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF" + b"\x13" * 60)
    (tmp_path / "notes.mp3").write_text("just text")
    for name, reason in (("empty.wav", "the file is empty"), ("corrupt.wav", "cannot decode the audio"),
                         ("notes.mp3", "cannot decode the audio"), ("nope.flac", "no such audio file")):
        with pytest.raises(MediaError) as err:
            load_audio(tmp_path / name, 16000)
        assert str(err.value).startswith(str(tmp_path / name)) and reason in str(err.value)


def test_find_bad_inputs_lists_every_failure_in_order(tmp_path):
    write_wav(tmp_path / "ok.wav", tone(0.2, 16000)[0].numpy(), 16000)
    (tmp_path / "bad.wav").write_bytes(b"junk")
    items = [str(tmp_path / "ok.wav")] * 20 + [str(tmp_path / "bad.wav"), str(tmp_path / "gone.wav")]
    bad = find_bad_inputs(items, lambda x: load_audio(x, 16000))
    assert [i for i, _ in bad] == [20, 21]
    msg = format_bad_inputs(bad, len(items), "train.csv")
    assert msg.splitlines()[0] == "train.csv: 2 of 22 inputs cannot be read:"
    assert "row 20: " + str(tmp_path / "bad.wav") in msg


def test_media_fingerprint_follows_file_changes(tmp_path):
    p = tmp_path / "x.wav"
    write_wav(p, tone(0.1, 16000)[0].numpy(), 16000)
    first = media_fingerprint([str(p)])
    assert media_fingerprint([str(p)]) == first
    write_wav(p, tone(0.2, 16000)[0].numpy(), 16000)
    assert media_fingerprint([str(p)]) != first
    a = np.zeros((4, 4, 3), np.uint8)
    assert media_fingerprint([a]) != media_fingerprint([a + 1])
