"""`halm demo`: the offline end-to-end job on embedded defaults.

Current scope (foundation): synthesise a small speech, music and sfx corpus; read each back through
the source readers; compute the causal log-mel front-end aligned to 24 kHz EnCodec frames (75 Hz);
check the slice count of every clip; write a PNG of waveforms and mel slices and a summary. The
Whisper-GPT and text-to-audio parts are added by their issues.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from tqdm import tqdm

from halm.audio import MelConfig, causal_log_mel, load_audio, n_codec_frames
from halm.data import open_source
from halm.data.synth import KINDS, synthesize
from halm.plots import plot_waveforms_and_mels


def run_demo(out: str, quick: bool = False, seed: int = 0, progress: bool = True) -> dict:
    out_dir = Path(out)
    minutes = 0.15 if quick else 1.0
    mel_cfg = MelConfig(sample_rate=24000, hop_length=320, frames_per_token=2, n_mels=80)
    summary: dict = {"out": str(out_dir), "mel": mel_cfg.to_dict(), "corpora": {}}
    rows = []
    for kind in KINDS:
        stats = synthesize(kind, out_dir / "corpora" / kind, minutes, seed=seed, progress=progress)
        items = list(open_source(out_dir / "corpora" / kind))
        frames, audio_s, t0 = 0, 0.0, time.perf_counter()
        first = None
        for item in tqdm(items, desc=f"causal mel {kind}", disable=not progress, dynamic_ncols=True):
            wav, sr = load_audio(item.path, sample_rate=mel_cfg.sample_rate)
            mel = causal_log_mel(wav[0], mel_cfg)  # (T, r, M)
            assert mel.shape[0] == n_codec_frames(wav.shape[1], mel_cfg.hop_length)
            frames += mel.shape[0]
            audio_s += wav.shape[1] / sr
            if first is None:
                first = (f"{kind}: {item.text[:90]}", wav[0], sr, mel.reshape(-1, mel_cfg.n_mels).numpy(),
                         sr / mel_cfg.mel_hop)
        elapsed = time.perf_counter() - t0
        rows.append(first)
        summary["corpora"][kind] = {
            "clips": stats.items, "minutes": round(stats.seconds / 60, 2),
            "synth_realtime_factor": round(stats.realtime_factor, 1) if stats.new_items else None,
            "codec_frames": frames, "mel_realtime_factor": round(audio_s / elapsed, 1),
            "example_caption": items[0].text,
        }
    summary["figure"] = str(plot_waveforms_and_mels(rows, out_dir / "front_end.png"))
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def format_summary(s: dict) -> str:
    lines = [
        "| corpus | clips | minutes | synth x real time | codec frames (75 Hz) | causal mel x real time |",
        "|---|---|---|---|---|---|",
    ]
    for kind, c in s["corpora"].items():
        rt = "resumed (nothing new)" if c["synth_realtime_factor"] is None else f"{c['synth_realtime_factor']:.0f}x"
        lines.append(f"| {kind} | {c['clips']} | {c['minutes']:.2f} | {rt} | {c['codec_frames']} | "
                     f"{c['mel_realtime_factor']:.0f}x |")
    lines.append("")
    for kind, c in s["corpora"].items():
        lines.append(f"{kind:>6}: {c['example_caption']}")
    lines.append(f"\nfigure: {s['figure']}\nsummary: {Path(s['out']) / 'summary.json'}")
    return "\n".join(lines)

