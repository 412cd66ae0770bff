"""Integration: the codec shipped inside the package (halm/assets/codec_halm_small)."""

import numpy as np
import pytest
import torch

from halm.audio import load_audio
from halm.codec.eval import mel_l1, mu_law_baseline
from halm.codec.model import Codec
from halm.data.synth import synthesize


@pytest.fixture(scope="module")
def codec():
    return Codec.load("halm-small")


def test_shipped_codec_contract(codec):
    assert (codec.sample_rate, codec.hop_length, codec.frame_rate, codec.codebook_size) == (24000, 320, 75.0, 1024)
    assert codec.n_codebooks >= 4
    info = codec.info()
    assert info.name == "halm-small" and len(info.weights_sha256) == 16


def test_shipped_codec_tokens_carry_information(codec, tmp_path):
    synthesize("speech", tmp_path / "s", 0.2, seed=123, progress=False)
    a_path, b_path = sorted((tmp_path / "s" / "audio").glob("*.wav"))[:2]
    a, sr = load_audio(a_path, sample_rate=24000)
    b, _ = load_audio(b_path, sample_rate=24000)
    codes = codec.encode(torch.from_numpy(a)[None], sr)
    assert codes.shape == (1, codec.n_codebooks, -(-a.shape[1] // 320))
    for k in range(codec.n_codebooks):
        assert len(torch.unique(codes[0, k])) >= 8, f"codebook {k} is (nearly) constant"
    x = torch.from_numpy(a[0])
    rec_a = codec.decode(codes)[0, 0, : a.shape[1]]
    n = min(a.shape[1], b.shape[1])
    rec_b = codec.decode(codec.encode(torch.from_numpy(b)[None], sr))[0, 0]
    assert np.isfinite(rec_a.numpy()).all()
    # the decoded clip is closer to its own original than silence is, and than another clip's decoding is
    assert mel_l1(x, rec_a, sr) < mel_l1(x, torch.zeros_like(x), sr)
    assert mel_l1(x[:n], rec_a[:n], sr) < mel_l1(x[:n], rec_b[:n], sr)
    # and it beats the naive codec at the same bitrate (8-bit mu-law at bitrate / 8 Hz) on the log-mel distance
    mulaw = torch.from_numpy(mu_law_baseline(a[0], sr, codec.bitrate_kbps))
    assert mel_l1(x, rec_a, sr) < mel_l1(x, mulaw, sr)


def test_codec_eval_command_writes_json_plot_and_wavs(tmp_path, capsys):
    import json

    from halm.cli import main

    synthesize("speech", tmp_path / "s", 0.15, seed=7, progress=False)
    rc = main(["codec", "eval", "--codec", "halm-small", "--data", str(tmp_path / "s"), "--max-items", "2",
               "--n-codebooks", "4", "--json", "--plot", str(tmp_path / "p.png"), "--wav", str(tmp_path / "w")])
    assert rc == 0
    r = json.loads(capsys.readouterr().out)
    assert r["n_codebooks"] == 4 and r["bitrate_kbps"] == 3.0 and r["clips"] == 2
    assert len(r["codebook_usage"]) == 4 and all(0 < u <= 1 for u in r["codebook_usage"])
    for k in ("mel_l1", "stft_distance", "si_snr", "voicing_recall", "gross_pitch_error", "f0_error_cents", "f0_frame_error",
              "f1_error", "f2_error", "formant_gross_error"):
        assert r[k] is not None and np.isfinite(r[k]), k
        assert k in r["mulaw_baseline"] and k in r["winner"]
    assert r["voiced_frames"] > 50 and 0 <= r["voicing_recall"] <= 1 and 0 <= r["gross_pitch_error"] <= 1
    # mu-law at 3 kbps (375 Hz sampling) keeps no formant above 187 Hz: it loses (almost) every frame's F2
    assert 0 <= r["formant_gross_error"] < 0.9 < r["mulaw_baseline"]["formant_gross_error"] <= 1
    assert (tmp_path / "p.png").stat().st_size > 1000
    assert len(list((tmp_path / "w").rglob("*.codec.wav"))) == 2
    clips = r["per_clip"]  # each clip's own scores, with its attributes; the pooled frames are theirs
    assert len(clips) == 2 and all("voice" in c["attributes"] for c in clips)
    assert sum(c["codec"]["voiced_frames"] for c in clips) == r["voiced_frames"]
    assert np.isclose(np.mean([c["codec"]["mel_l1"] for c in clips]), r["mel_l1"], atol=1e-3)
    assert all(60 <= c["f0_median_hz"]["original"] <= 500 for c in clips)  # YIN's range; the voices are voiced
    hp = r["hop_periodicity"]
    assert all(-1 <= hp[k] <= 1 for k in ("original", "codec", "mulaw_baseline"))
    assert np.isclose(np.mean([c["original_hop_periodicity"] for c in clips]), hp["original"], atol=1e-3)
    fl = r["frame_locked_share"]
    assert all(0 <= fl[k] <= 1 for k in ("original", "codec", "mulaw_baseline"))
    assert np.isclose(np.mean([c["original_frame_locked_share"] for c in clips]), fl["original"], atol=1e-3)
