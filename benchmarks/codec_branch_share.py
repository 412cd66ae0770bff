"""Analysis (not a test): what a codec's harmonic branch (`halm.codec.harmonic.HarmonicBranch`) contributes.

    python benchmarks/codec_branch_share.py --codec RUN/codec [--data /work/data/heldout_speech] [--max-items 4] [--json] [--plot P.png]

For each held-out clip: the branch's share of the decoding's rms (decoding minus the decoder's own
output), the YIN median F0 of the original, of the branch alone and of the whole decoding, and how well
the branch's pitch head reads the original's pitch (share of the original's voiced 10 ms frames whose
predicted F0 is > 20% off, and the mean voicing gate on voiced and unvoiced frames). --plot draws the
log-mel spectrograms of the first clip: the original, the decoding, the branch alone and the decoder's
share alone, on one colour scale.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from halm.audio.io import load_audio
from halm.audio.sources import open_source
from halm.codec.eval import _median_f0
from halm.codec.harmonic import decode_latent, lstm_end
from halm.codec.model import Codec
from halm.metrics.pitch import yin_f0


def plot_parts(wav: np.ndarray, dec: np.ndarray, harm: np.ndarray, sample_rate: int, title: str, path: str) -> None:
    """Log-mel of the original, the decoding, the branch alone and the decoder's share alone, one colour scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from halm.codec.eval import log_mel

    panels = {"original": wav, "decoding": dec + harm, "branch alone": harm, "decoder's share alone": dec}
    mels = {k: log_mel(torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)), sample_rate, floor=-7.0).numpy()
            for k, v in panels.items()}
    top = max(float(m.max()) for m in mels.values())
    fig, axes = plt.subplots(len(mels), 1, figsize=(10, 2.2 * len(mels)), sharex=True)
    for ax, (name, m) in zip(axes, mels.items()):
        ax.imshow(m, origin="lower", aspect="auto", vmin=top - 8.0, vmax=top, cmap="magma",
                  extent=(0, len(wav) / sample_rate, 0, m.shape[0]))
        ax.set_ylabel("mel bin")
        ax.set_title(f"{title}: {name}", fontsize=9)
    axes[-1].set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def clip_scores(codec: Codec, wav: np.ndarray) -> tuple[dict, np.ndarray, np.ndarray]:
    """-> the clip's scores, the decoder's share and the branch's output (each (T * hop,), for --plot)."""
    m, sr = codec.model, codec.sample_rate
    codes = codec.encode(torch.from_numpy(wav)[None, None], sr)
    with torch.inference_mode():
        q = m.quantizer.decode(codes.transpose(0, 1))  # (1, D, T)
        dec, harm = decode_latent(m, q, parts=True)
        h = q
        for layer in m.decoder.layers[: lstm_end(m)]:
            h = layer(h)  # (1, C, T): the LSTM output the branch reads
        f0_pred, gate, _ = m.harmonic.controls(q, h)
    dec, harm = dec[0, 0].numpy(), harm[0, 0].numpy()
    full = dec + harm
    f0 = yin_f0(wav, sr)  # frame i centred at 0.02 + 0.01 i s
    frame = np.clip(((np.arange(len(f0)) * 0.01 + 0.02) * codec.frame_rate).astype(int), 0, q.shape[-1] - 1)
    voiced, pred, g = f0 > 0, f0_pred[0].numpy()[frame], gate[0].numpy()[frame]
    scores = {"branch_rms_share": round(float(harm.std() / full.std()), 3),
              "f0_median_hz": {"original": _median_f0(f0), "branch": _median_f0(yin_f0(harm, sr)),
                               "decoding": _median_f0(yin_f0(full, sr))},
              "head_gross_pitch_error": round(float(np.mean(np.abs(np.log(pred[voiced] / f0[voiced])) > np.log(1.2))), 3)
              if voiced.any() else None,
              "gate_mean": {"voiced": round(float(g[voiced].mean()), 3) if voiced.any() else None,
                            "unvoiced": round(float(g[~voiced].mean()), 3) if (~voiced).any() else None}}
    return scores, dec, harm


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--codec", required=True, help="a codec folder with a harmonic branch (e.g. RUN/codec)")
    p.add_argument("--data", default="/work/data/heldout_speech", help="held-out source (default: the synth speech set)")
    p.add_argument("--max-items", type=int, default=4, help="clips to score, the source's first ones (default 4)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of one line per clip")
    p.add_argument("--plot", help="write a PNG of the first clip's log-mel: original, decoding, branch alone, decoder alone")
    a = p.parse_args()
    codec = Codec.load(a.codec)
    if getattr(codec.model, "harmonic", None) is None:
        raise SystemExit(f"{a.codec}: this codec has no harmonic branch (config.json harmonics: 0)")
    rows = []
    for item in list(open_source(a.data))[: a.max_items]:
        wav, _ = load_audio(item.path, sample_rate=codec.sample_rate, warn_silent=False)
        scores, dec, harm = clip_scores(codec, wav[0])
        rows.append({"id": item.id, **scores})
        if a.plot and len(rows) == 1:
            n = wav.shape[-1]
            plot_parts(wav[0], dec[:n], harm[:n], codec.sample_rate, item.id, a.plot)
        if not a.json:
            r, f = rows[-1], rows[-1]["f0_median_hz"]
            print(f"{r['id']}: branch {r['branch_rms_share']:.3f} of the rms; median F0 original {f['original']}, "
                  f"branch {f['branch']}, decoding {f['decoding']} Hz; head off by >20% on {r['head_gross_pitch_error']} "
                  f"of voiced frames; gate {r['gate_mean']}")
    if a.json:
        print(json.dumps({"codec": a.codec, "data": a.data, "clips": rows}))


if __name__ == "__main__":
    main()
