"""`halm demo`: the offline end-to-end job on embedded defaults.

1. synthesise small speech, music and sfx corpora; read each back through the source readers;
   compute the causal log-mel front-end aligned to 24 kHz EnCodec frames (75 Hz) (front_end.png);
2. tokenize the speech corpus with the codec (`halm prepare`); decode one clip from its coarse
   codebook alone and from all codebooks (codec.png, codec/*.wav);
3. Whisper-GPT: train tiny GPT-S, GPT-L (about 10x) and the hybrid for the same token budget on the
   speech tokens, evaluate them on the test split, write the comparison (lm/report.md, lm/curves.png)
   and a continuation of a test clip from each model (lm/continuations/*.wav + .png);
4. text-to-audio: tokenize the music corpus (4 codebooks), train a tiny t2a LM with and without the RR
   loss (same seed, same steps), compare them (t2a/report.md, t2a/t2a_terms.png: L_cond, L_uncond, L_rr)
   and generate audio for a few captions with classifier-free guidance (t2a/samples/*.wav, samples.png).
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


def run_demo(out: str, quick: bool = False, seed: int = 0, progress: bool = True, codec: str = "halm-small") -> dict:
    out_dir = Path(out)
    minutes = 0.15 if quick else 1.0
    music_minutes = 0.5 if quick else 4.0  # the text-to-audio part needs a few dozen captioned clips
    speech_minutes = 0.6 if quick else 8.0  # the LM part needs more speech than the front-end figure
    mel_cfg = MelConfig(sample_rate=24000, hop_length=320, frames_per_token=2, n_mels=80)
    summary: dict = {"out": str(out_dir), "mel": mel_cfg.to_dict(), "corpora": {}}
    rows = []
    for kind in KINDS:
        m = {"speech": speech_minutes, "music": music_minutes}.get(kind, minutes)
        stats = synthesize(kind, out_dir / "corpora" / kind, m, seed=seed, progress=progress)
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
    summary["tokens"] = _tokenize_speech(out_dir, codec, progress)
    summary["lm"] = _language_models(out_dir, quick, seed, progress)
    summary["t2a"] = _text_to_audio(out_dir, quick, seed, codec, progress)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _tokenize_speech(out_dir: Path, codec_spec: str, progress: bool) -> dict:
    """halm prepare on the speech corpus, then decode one clip from 1 and from all codebooks."""
    import torch

    from halm.audio import save_audio
    from halm.audio.mel import display_mel
    from halm.codec.model import Codec
    from halm.data import open_dataset
    from halm.data.prepare import PrepareConfig, prepare
    from halm.plots import plot_spectrogram_pairs

    r = prepare(str(out_dir / "corpora" / "speech"), out_dir / "data_speech",
                PrepareConfig(codec=codec_spec, shard_size=16, test_share=0.2, dev_share=0.2), progress=progress)
    codec = Codec.load(codec_spec)
    item = open_dataset(out_dir / "data_speech")[0]
    wav, sr = load_audio(out_dir / "corpora" / "speech" / "audio" / f"{item.id}.wav", sample_rate=codec.sample_rate)
    codes = torch.from_numpy(item.codes.astype("int64"))[None]  # (1, K, T)
    decoded = {}
    for name, k in (("coarse", 1), ("full", codec.n_codebooks)):
        y = codec.decode(codes[:, :k])[0, 0, : wav.shape[1]].cpu()
        decoded[name] = y
        save_audio(out_dir / "codec" / f"{item.id}.{name}_{k}cb.wav", y.numpy(), sr)
    save_audio(out_dir / "codec" / f"{item.id}.original.wav", wav, sr)
    real, fps = display_mel(wav[0], sr)
    fig = plot_spectrogram_pairs(
        [(f"{item.id}: all {codec.n_codebooks} codebooks", real, display_mel(decoded["full"], sr)[0], fps),
         (f"{item.id}: coarse codebook only", real, display_mel(decoded["coarse"], sr)[0], fps)],
        out_dir / "codec.png", ("original", "decoded"))
    return {"codec": codec.name, "items": r["items"], "prepare_realtime_factor": r["realtime_factor"],
            "n_codebooks": codec.n_codebooks, "bitrate_kbps": round(codec.bitrate_kbps, 2),
            "figure": str(fig), "wavs": str(out_dir / "codec")}


# The three models of the paper at demo size, trained for the same number of tokens.
DEMO_MODELS = (("GPT-S", "tiny-gpt"), ("GPT-L", "tiny-gpt-l"), ("Whisper-GPT", "tiny-whisper-gpt"))


def _language_models(out_dir: Path, quick: bool, seed: int, progress: bool) -> dict:
    from halm.audio import save_audio
    from halm.data import open_dataset
    from halm.evaluate import compare_runs
    from halm.generate import generate_continuation
    from halm.runs import load_run
    from halm.train import train

    data = out_dir / "data_speech"
    steps, batch = (12, 4) if quick else (400, 16)
    settings = [f"batch_size={batch}", f"seed={seed}", f"warmup_steps={max(2, steps // 10)}", "lr=2e-3",
                f"eval_every={max(4, steps // 8)}", "eval_tokens=0", f"ckpt_every={max(4, steps // 4)}"]
    lm_dir = out_dir / "lm"
    results = {}
    for name, preset in DEMO_MODELS:
        results[name] = train(preset, str(data), lm_dir / "runs" / name, steps=steps, overrides=settings, progress=progress)
    cmp = compare_runs([str(lm_dir / "runs" / n) for n, _ in DEMO_MODELS], str(lm_dir), names=[n for n, _ in DEMO_MODELS],
                       progress=False)
    item = open_dataset(data, "test")[0]
    wav, sr = load_audio(out_dir / "corpora" / "speech" / "audio" / f"{item.id}.wav", sample_rate=24000)
    prompt = wav[:, : int(1.5 * sr)]
    continuations = {}
    for name, _ in DEMO_MODELS:
        model, rc = load_run(lm_dir / "runs" / name)
        g = generate_continuation(model, rc, prompt, sr, 1.0 if quick else 3.0, top_k=50, seed=seed)
        path = save_audio(lm_dir / "continuations" / f"{name}.wav", g["audio"], g["sample_rate"])
        continuations[name] = {"wav": str(path), "tokens_per_s": round(g["tokens_per_s"], 1),
                               "realtime_factor": round(g["realtime_factor"], 2)}
    _plot_continuations(lm_dir / "continuations.png", prompt, sr, continuations)
    return {"steps": steps, "batch_size": batch, "tokens_per_model": results["GPT-S"]["tokens"],
            "table": cmp["table"], "report": cmp["report"], "curves": cmp["curves"],
            "train_tokens_per_s": {n: r["tokens_per_s"] for n, r in results.items()},
            "continuations": continuations, "continuations_figure": str(lm_dir / "continuations.png"),
            "prompt": f"first 1.5 s of test clip {item.id}"}


DEMO_T2A = (("no RR", "rr_weight=0.0"), ("RR", "rr_weight=3.0"))


def _text_to_audio(out_dir: Path, quick: bool, seed: int, codec_spec: str, progress: bool) -> dict:
    """tiny-t2a with and without RR on the music corpus; comparison and CFG samples for a few captions."""
    from halm.audio import save_audio
    from halm.data import open_dataset
    from halm.data.prepare import PrepareConfig, prepare
    from halm.evaluate import compare_runs
    from halm.generate import text_to_audio
    from halm.models.text import load_text_encoder
    from halm.runs import load_run
    from halm.train import train

    data = out_dir / "data_music"
    prepare(str(out_dir / "corpora" / "music"), data, PrepareConfig(codec=codec_spec, n_codebooks=4, shard_size=16,
                                                                    test_share=0.15, dev_share=0.15, require_text=True),
            progress=progress)
    steps, batch = (8, 4) if quick else (300, 8)
    # cfg_dropout 0.3 (paper: 0.1) so that a short run has enough CFG steps for RR to act on
    settings = [f"batch_size={batch}", f"seed={seed}", f"warmup_steps={max(2, steps // 10)}", "lr=2e-3",
                f"eval_every={max(4, steps // 6)}", "eval_tokens=0", f"ckpt_every={max(4, steps // 3)}",
                "cfg_dropout=0.3"]
    t2a_dir = out_dir / "t2a"
    results = {name: train("tiny-t2a", str(data), t2a_dir / "runs" / name.replace(" ", "_"), steps=steps,
                           overrides=settings + [rr], progress=progress) for name, rr in DEMO_T2A}
    runs = [str(t2a_dir / "runs" / n.replace(" ", "_")) for n, _ in DEMO_T2A]
    cmp = compare_runs(runs, str(t2a_dir), names=[n for n, _ in DEMO_T2A], progress=False)
    test = open_dataset(data, "test")
    captions = sorted({it.text for it in test})[: 1 if quick else 3]
    samples, encoder = {}, load_text_encoder("minilm")
    for (name, _), run in zip(DEMO_T2A, runs):
        model, rc = load_run(run)
        g = text_to_audio(model, rc, captions, 1.0 if quick else 4.0, cfg_coef=3.0, seed=seed, encoder=encoder)
        samples[name] = []
        for i, caption in enumerate(captions):
            path = save_audio(t2a_dir / "samples" / f"{name.replace(' ', '_')}_{i}.wav", g["audio"][i], g["sample_rate"])
            samples[name].append({"caption": caption, "wav": str(path)})
        samples[name + " speed"] = round(g["realtime_factor"], 2)
    _plot_samples(t2a_dir / "samples.png", samples, [n for n, _ in DEMO_T2A])
    return {"steps": steps, "batch_size": batch, "table": cmp["table"], "report": cmp["report"],
            "terms_figure": str(t2a_dir / "t2a_terms.png"), "samples": samples,
            "samples_figure": str(t2a_dir / "samples.png"), "captions": captions,
            "train_tokens_per_s": {n: r["tokens_per_s"] for n, r in results.items()}}


def _plot_samples(path: Path, samples: dict, names: list[str]):
    import soundfile as sf

    from halm.audio.mel import display_mel
    from halm.plots import plot_spectrogram_pairs

    rows = []
    for i, s in enumerate(samples[names[0]]):
        mels = []
        for n in names:
            y, sr = sf.read(samples[n][i]["wav"], dtype="float32")
            mel, fps = display_mel(y, sr)
            mels.append(mel)
        rows.append((f'"{s["caption"][:80]}"', mels[0], mels[1], fps))
    plot_spectrogram_pairs(rows, path, tuple(names))


def _plot_continuations(path: Path, prompt, sr: int, continuations: dict):
    import soundfile as sf

    from halm.audio.mel import display_mel
    from halm.plots import plot_spectrogram_pairs

    p, fps = display_mel(prompt[0], sr)
    rows = []
    for name, c in continuations.items():
        y, _ = sf.read(c["wav"], dtype="float32")
        rows.append((f"{name}: prompt (left) and prompt + continuation (right)", p, display_mel(y, sr)[0], fps))
    plot_spectrogram_pairs(rows, path, ("real prompt", "decoded prompt + generated"))


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
    t = s["tokens"]
    rt = f"{t['prepare_realtime_factor']:.0f}x real time" if t["prepare_realtime_factor"] else "already prepared"
    lines.append(f"\ntokenized {t['items']} speech clips with codec {t['codec']} ({t['n_codebooks']} codebooks, "
                 f"{t['bitrate_kbps']} kbps) at {rt}; decoded audio in {t['wavs']}")
    lm = s["lm"]
    lines.append(f"\nWhisper-GPT on the speech tokens: {lm['tokens_per_model']} training tokens per model "
                 f"({lm['steps']} steps x batch {lm['batch_size']}); test split:\n")
    lines.append(lm["table"])
    lines.append("\ncontinuations of the " + lm["prompt"] + ": " + ", ".join(
        f"{n} {c['realtime_factor']:.1f}x real time" for n, c in lm["continuations"].items()))
    ta = s["t2a"]
    lines.append(f"\ntext-to-audio (tiny-t2a, music corpus, {ta['steps']} steps x batch {ta['batch_size']}, "
                 f"with and without RR); test split:\n")
    lines.append(ta["table"])
    lines.append(f"\nsamples (CFG 3.0) for {len(ta['captions'])} test captions in {Path(ta['samples_figure']).parent / 'samples'}")
    lines.append(f"figures: {s['figure']}, {t['figure']}, {lm['curves']}, {lm['continuations_figure']}, "
                 f"{ta['terms_figure']}, {ta['samples_figure']}\n"
                 f"reports: {lm['report']}, {ta['report']}; summary: {Path(s['out']) / 'summary.json'}")
    return "\n".join(lines)

