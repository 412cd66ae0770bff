"""Benchmark (not a test): halm's SoundFont renderer against tinysoundfont on the music corpus's pieces.

    python benchmarks/renderer_fidelity.py --pieces 12

Composes the first N pieces of `halm synth music --seed 0` and renders each with both renderers (the same
MIDI, the same TimGM6mb SoundFont); reports per piece the RMS of each, the spectral centroid of each, the
correlation of their 50 ms loudness envelopes, and the mean deviation of their long-term spectra in 24
log-spaced bands from 50 Hz to 11 kHz (dB, after removing the mean offset); then each renderer's speed.
Needs tinysoundfont (`pip install --no-deps tinysoundfont`).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pieces", type=int, default=12, help="pieces compared (default 12)")
    ap.add_argument("--sample-rate", type=int, default=24000)
    ap.add_argument("--json", action="store_true", help="print one JSON object only")
    args = ap.parse_args()
    from halm.data.synth.music import CLIP_SECONDS, caption, compose, render, sample_attributes

    sr, rows, wall = args.sample_rate, [], {"halm": 0.0, "tinysoundfont": 0.0}
    f = np.fft.rfftfreq(int(CLIP_SECONDS * sr), 1 / sr)
    bands = np.geomspace(50, 11000, 25)
    for i in range(args.pieces):
        rng = np.random.default_rng([0, i])  # clip i of a corpus of seed 0
        a = sample_attributes(rng)
        caption(a, rng)
        pm = compose(a, rng, CLIP_SECONDS)
        w = {}
        for r in wall:
            t = time.perf_counter()
            w[r] = render(pm, sr, CLIP_SECONDS, r).astype(np.float64)
            wall[r] += time.perf_counter() - t
        spec = {r: np.abs(np.fft.rfft(x)) for r, x in w.items()}
        env = {r: np.sqrt((x[: len(x) // 1200 * 1200].reshape(-1, 1200) ** 2).mean(1)) for r, x in w.items()}
        level = {r: np.array([s[(f >= lo) & (f < hi)].mean() for lo, hi in zip(bands[:-1], bands[1:])]) for r, s in spec.items()}
        d = 20 * np.log10(level["halm"] / level["tinysoundfont"])
        rows.append({"piece": i, "lead": a["lead"], "accompaniment": a["accompaniment"], "drums": a["drums"],
                     "rms": {r: round(float(np.sqrt((x ** 2).mean())), 4) for r, x in w.items()},
                     "centroid_hz": {r: round(float((s * f).sum() / s.sum())) for r, s in spec.items()},
                     "envelope_corr": round(float(np.corrcoef(env["halm"], env["tinysoundfont"])[0, 1]), 3),
                     "band_db_dev": round(float(np.abs(d - d.mean()).mean()), 2)})
    audio = args.pieces * CLIP_SECONDS
    result = {"date": datetime.date.today().isoformat(), "machine": f"{platform.machine()}, 1 process", "pieces": rows,
              "x_realtime": {r: round(audio / s, 1) for r, s in wall.items()}}
    if args.json:
        print(json.dumps(result))
        return
    print("| piece | lead / accompaniment | drums | RMS halm / tsf | centroid halm / tsf (Hz) | envelope corr. | band dev. (dB) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['piece']} | {r['lead']} / {r['accompaniment']} | {'yes' if r['drums'] else 'no'} | "
              f"{r['rms']['halm']:.3f} / {r['rms']['tinysoundfont']:.3f} | {r['centroid_hz']['halm']} / "
              f"{r['centroid_hz']['tinysoundfont']} | {r['envelope_corr']:.2f} | {r['band_db_dev']:.1f} |")
    ratio = [r["rms"]["halm"] / r["rms"]["tinysoundfont"] for r in rows]
    print(f"\nRMS ratio {np.mean(ratio):.2f} (range {min(ratio):.2f}-{max(ratio):.2f}); envelope corr. >= "
          f"{min(r['envelope_corr'] for r in rows):.2f}; band dev. <= {max(r['band_db_dev'] for r in rows):.1f} dB; "
          f"speed: halm {result['x_realtime']['halm']:.0f}x, tinysoundfont {result['x_realtime']['tinysoundfont']:.0f}x real time")


if __name__ == "__main__":
    main()
