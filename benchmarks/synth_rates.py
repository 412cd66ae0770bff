"""Benchmark (not a test): offline corpus synthesis speed and causal-mel speed, in x real time.

    python benchmarks/synth_rates.py --minutes 5

Synthesises `minutes` of each corpus into a temporary folder (single process) and reports audio
seconds made per wall second (music with halm's SoundFont renderer, and with tinysoundfont where it is
installed: the same compositions); then runs the causal log-mel front-end over the speech corpus and
compares it with librosa's melspectrogram on the same causal framing (the peer, same run).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import tempfile
import time

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=5.0, help="minutes of audio per corpus (default 5)")
    ap.add_argument("--seed", type=int, default=0, help="corpus seed (default 0)")
    ap.add_argument("--json", action="store_true", help="print one JSON object only")
    args = ap.parse_args()

    from halm.audio import MelConfig, causal_log_mel, load_audio
    from halm.data import open_source
    from halm.data.synth import KINDS, synthesize

    result = {"date": datetime.date.today().isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
              "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "minutes": args.minutes, "synth": {}}
    with tempfile.TemporaryDirectory() as tmp:
        jobs = [(kind, kind, None) for kind in KINDS]
        try:  # the peer renderer of music, when installed (pip install --no-deps tinysoundfont)
            import tinysoundfont  # noqa: F401

            jobs.append(("music (tinysoundfont)", "music", "tinysoundfont"))
        except ImportError:
            pass
        for name, kind, renderer in jobs:
            s = synthesize(kind, f"{tmp}/{name.replace(' ', '_')}", args.minutes, seed=args.seed, progress=not args.json,
                           renderer=renderer)
            result["synth"][name] = {"clips": s.items, "seconds": round(s.seconds, 1), "elapsed_s": round(s.elapsed, 2),
                                     "x_realtime": round(s.realtime_factor, 1)}
        cfg = MelConfig()
        wavs = [load_audio(i.path, sample_rate=cfg.sample_rate)[0][0] for i in open_source(f"{tmp}/speech")]
        seconds = sum(len(w) for w in wavs) / cfg.sample_rate
        t = time.perf_counter()
        for w in wavs:
            causal_log_mel(torch.from_numpy(w), cfg)
        ours = time.perf_counter() - t
        mel = {"audio_s": round(seconds, 1), "halm_x_realtime": round(seconds / ours, 1)}
        try:
            import librosa

            librosa.feature.melspectrogram(y=wavs[0], sr=cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.mel_hop,
                                           center=False, n_mels=cfg.n_mels)  # warm-up: caches outside the timing
            t = time.perf_counter()
            for w in wavs:
                T = -(-len(w) // cfg.hop_length)
                x = np.pad(w, (cfg.n_fft - cfg.mel_hop, T * cfg.hop_length - len(w)))
                p = librosa.feature.melspectrogram(y=x, sr=cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.mel_hop,
                                                   center=False, n_mels=cfg.n_mels)
                np.log10(np.maximum(p, cfg.log_floor))
            ref = time.perf_counter() - t
            mel["librosa_x_realtime"] = round(seconds / ref, 1)
            mel["speedup_vs_librosa"] = round(ref / ours, 2)
        except ImportError:
            pass
        result["causal_mel"] = mel
    if args.json:
        print(json.dumps(result))
        return
    print(f"{result['date']}  {result['machine']}  torch {result['torch']} ({result['torch_threads']} threads)")
    print("| corpus | clips | audio (s) | wall (s) | x real time |\n|---|---|---|---|---|")
    for kind, r in result["synth"].items():
        print(f"| {kind} | {r['clips']} | {r['seconds']} | {r['elapsed_s']} | {r['x_realtime']:.0f}x |")
    print(f"causal mel: {mel}")


if __name__ == "__main__":
    main()
