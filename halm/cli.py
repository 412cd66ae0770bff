"""The `halm` command: one entry point, subcommands mapped to plain functions."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import os
import sys
from pathlib import Path

from halm import __version__
from halm.errors import UserError


def _user_errors() -> tuple[type[Exception], ...]:
    """What the CLI shows as one line: bad input (halm.errors.UserError), a missing file, a diverged run.
    Anything else is a bug and keeps its traceback."""
    from halm.train import TrainingDiverged

    return (UserError, FileNotFoundError, TrainingDiverged)


def cmd_synth(args) -> int:
    from halm.data.synth import synthesize

    stats = synthesize(args.kind, args.out, args.minutes, seed=args.seed, sample_rate=args.sample_rate,
                       progress=not args.json and not args.quiet)
    result = {"out": stats.out, "kind": stats.kind, "clips": stats.items, "seconds": round(stats.seconds, 2),
              "new_clips": stats.new_items, "new_seconds": round(stats.new_seconds, 2),
              "elapsed_s": round(stats.elapsed, 2), "realtime_factor": round(stats.realtime_factor, 1)}
    if args.json:
        print(json.dumps(result))
    else:
        what = (f"made {stats.new_items} clips ({stats.new_seconds / 60:.1f} min) at {stats.realtime_factor:.0f}x real time"
                if stats.new_items else "already complete, nothing to do")
        print(f"{stats.out}: {what}; corpus has {stats.items} clips, {stats.seconds / 60:.1f} min "
              f"(manifest: {stats.out}/manifest.jsonl)")
    return 0


def cmd_inspect(args) -> int:
    from halm.data import open_source

    n, with_text, splits, ids = 0, 0, {}, set()
    missing, dupes = [], []
    for item in open_source(args.source):
        n += 1
        with_text += item.text is not None
        splits[item.split or "(none)"] = splits.get(item.split or "(none)", 0) + 1
        if not item.path.exists():
            missing.append(str(item.path))
        if item.id in ids:
            dupes.append(item.id)
        ids.add(item.id)
    result = {"source": args.source, "items": n, "with_text": with_text, "splits": splits,
              "missing_files": missing[:20], "n_missing_files": len(missing), "duplicate_ids": dupes[:20]}
    bad = []
    if args.check:
        import soundfile as sf
        from tqdm import tqdm

        from halm.audio import AudioError, load_audio

        rates: dict[str, int] = {}
        seconds = 0.0
        for item in tqdm(list(open_source(args.source)), desc="inspect --check", unit="file", disable=args.json,
                         dynamic_ncols=True):
            if not item.path.exists():
                continue
            try:
                wav, sr = load_audio(item.path, min_seconds=args.min_seconds, warn_silent=False)
            except AudioError as e:
                bad.append({"id": item.id, "path": str(item.path), "reason": e.reason})
                continue
            except (sf.LibsndfileError, RuntimeError) as e:
                bad.append({"id": item.id, "path": str(item.path), "reason": f"unreadable audio ({e})"})
                continue
            rates[str(sr)] = rates.get(str(sr), 0) + 1
            seconds += wav.shape[1] / sr
        result.update(sample_rates=rates, seconds=round(seconds, 2), bad_files=bad[:50], n_bad_files=len(bad))
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.source}: {n} items, {with_text} with text, {n - with_text} without, splits {splits}")
        for m in missing[:20]:
            print(f"  missing: {m}")
        for d in dupes[:20]:
            print(f"  duplicate id: {d}")
        if args.check:
            print(f"  {result['seconds'] / 60:.1f} min of audio, sample rates {result['sample_rates']}, "
                  f"{len(bad)} files prepare would skip")
            for b in bad[:50]:
                print(f"  bad: {b['path']}: {b['reason']}")
    return 1 if missing or dupes or bad else 0


def cmd_mel(args) -> int:
    import numpy as np

    from halm.audio import MelConfig, causal_log_mel, load_audio
    from halm.plots import plot_waveforms_and_mels

    cfg = MelConfig(sample_rate=args.sample_rate, hop_length=args.hop_length, frames_per_token=args.frames_per_token,
                    n_mels=args.n_mels, n_fft=args.n_fft)
    wav, sr = load_audio(args.audio, sample_rate=cfg.sample_rate)
    mel = causal_log_mel(wav[0], cfg)  # (T, r, M)
    if args.npy:
        np.save(args.npy, mel.numpy().astype(np.float16))
    if args.png:
        plot_waveforms_and_mels([(str(args.audio), wav[0], sr, mel.reshape(-1, cfg.n_mels).numpy(), sr / cfg.mel_hop)],
                                args.png)
    result = {"audio": args.audio, "seconds": round(wav.shape[1] / sr, 3), "slices": mel.shape[0],
              "frames_per_token": cfg.frames_per_token, "n_mels": cfg.n_mels, "min": float(mel.min()),
              "max": float(mel.max()), "mean": float(mel.mean()), "png": args.png, "npy": args.npy}
    print(json.dumps(result) if args.json else
          f"{args.audio}: {result['seconds']} s -> {mel.shape[0]} slices x {cfg.frames_per_token} frames x {cfg.n_mels} mels "
          f"(range {result['min']:.2f}..{result['max']:.2f})" + (f"; wrote {args.png}" if args.png else ""))
    return 0


def cmd_codec_train(args) -> int:
    from halm.audio.codec_train import CodecTrainConfig, train_codec

    cfg = CodecTrainConfig().override(args.set)
    if args.steps is not None:
        cfg = dataclasses.replace(cfg, steps=args.steps)
    result = train_codec(cfg, args.data, args.out, progress=not args.json, init_from=args.init_from)
    print(json.dumps(result) if args.json else
          f"trained {result['steps']} steps on {result['train_seconds_of_audio'] / 60:.1f} min of audio; "
          f"codec: {args.out}/codec (use --codec {args.out}/codec)")
    return 0


def train_judge_fn():
    from halm.judge import train_judge

    return train_judge


def cmd_judge_train(args) -> int:
    from halm.judge import train_judge

    r = train_judge(args.data, args.out, steps=args.steps, batch_size=args.batch_size, seed=args.seed,
                    heldout=args.heldout, progress=not args.json, device=args.device)
    r.pop("log")
    print(json.dumps(r) if args.json else f"wrote the judge to {args.out} ({r['clips']} clips, {r['steps']} steps, "
          f"{r['train_seconds']:.0f} s)" + (f"; held-out R@1 {r['heldout']['r_at_1']:.2f}, R@5 {r['heldout']['r_at_5']:.2f}"
                                              if r.get("heldout", {}).get("r_at_1") is not None else ""))
    return 0


def cmd_judge_eval(args) -> int:
    from halm.judge import evaluate_judge, load_judge

    r = evaluate_judge(load_judge(args.judge), args.data, progress=not args.json, device=args.device)
    if args.json:
        print(json.dumps(r))
    else:
        print(f"{r['clips']} clips" + (f": text->audio R@1 {r['r_at_1']:.3f}, R@5 {r['r_at_5']:.3f} over the "
                                       f"{r['described_clips']} described clips (chance R@1 {r['chance_r_at_1']:.3f})"
                                       if r["r_at_1"] is not None else " (none described: no retrieval score)"))
        for k, v in r["attribute_accuracy"].items():
            print(f"  {k:>18}: {100 * v:.1f}%")
    return 0


def cmd_listen(args) -> int:
    from halm.listen import Listener, ListenError, serve, summarize

    if args.summary:
        if args.dir or args.a or args.b:
            raise ListenError("--summary reads votes only; leave out --dir / --a / --b")
        if not (Path(args.summary) / "votes.jsonl").exists():
            raise ListenError(f"{args.summary}: no votes.jsonl (run the A/B test with --out {args.summary} first)")
        r = summarize(args.summary)
        if args.json:
            print(json.dumps(r))
        else:
            ci = f"95% CI {100 * r['ci95'][0]:.1f}-{100 * r['ci95'][1]:.1f}%" if r["ci95"] else "no decided votes"
            share = f"{100 * r['share_b']:.1f}%" if r["share_b"] is not None else "—"
            print(f"{r['n']} votes from {r['raters']} raters: A {r['a']}, B {r['b']}, same {r['same']}; "
                  f"B preferred in {share} of decided votes ({ci})")
            for pair, t in r["per_pair"].items():
                print(f"  {pair}: A {t['a']}, B {t['b']}, same {t['same']}" + (f"  ({t['caption']})" if t["caption"] else ""))
        return 0
    if args.a or args.b or args.out:
        if not (args.a and args.b and args.out) or args.dir:
            raise ListenError("the A/B test needs --a DIR_A --b DIR_B --out OUT (and no --dir)")
        listener = Listener([args.a, args.b], ab_out=args.out, seed=args.seed)
        what = f"A/B test of {len(listener.pairs)} pairs, votes to {args.out}/votes.jsonl"
    else:
        listener = Listener(args.dir or [])
        what = f"{sum(len(c) for c in listener.clips)} clips of {len(listener.dirs)} folder(s)"
    server = serve(listener, args.host, args.port)
    host, port = server.server_address[:2]
    print(f"halm listen: {what} on http://{host}:{port}/ (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


def cmd_eval_t2a(args) -> int:
    from halm.eval_t2a import eval_t2a

    out = args.out or str(Path(args.run) / "eval_t2a")
    r = eval_t2a(args.run, args.captions, out, n=args.n, cfg_coef=args.cfg, seed=args.seed, seconds=args.seconds,
                 judge_dir=args.judge, progress=not args.json, fad_model=args.fad_model, kl_model=args.kl_model,
                 clap_model=args.clap_model, codec_ceiling=not args.no_codec_ceiling, device=args.device)
    if args.json:
        print(json.dumps(r))
    else:
        print(", ".join(f"{k.upper()} by {v}" for k, v in r["models"].items()))
        print(f"FAD {r['fad']:.4f} ± {r['fad_std']:.4f}, KL {r['kl']:.3f}, CLAP {r['clap']:.3f} (reference "
              f"{r['reference']['clap']:.3f}); controllability: " + ", ".join(
                  f"{k} {100 * v:.0f}% (ref {100 * r['reference']['controllability'][k]:.0f}%)"
                  for k, v in r["controllability"].items()) + f"\nreport: {out}/report.md")
    return 0


def cmd_codec_eval(args) -> int:
    from halm.audio.codec import Codec
    from halm.audio.codec_eval import METRICS, evaluate_codec

    codec = Codec.load(args.codec, n_codebooks=args.n_codebooks)
    r = evaluate_codec(codec, args.data, max_items=args.max_items, wav_dir=args.wav, plot=args.plot,
                       progress=not args.json)
    if args.json:
        print(json.dumps(r))
        return 0
    print(f"codec {r['codec']}: {r['n_codebooks']} codebooks, {r['bitrate_kbps']} kbps, {r['clips']} clips")

    def row(name, model, m):
        cells = [m.get(k) for k in METRICS]
        print(f"| {name} | {model} | " + " | ".join("-" if v is None else f"{v:.3f}" for v in cells) + " |")

    print("| source | model | mel L1 | STFT dist | SI-SNR (dB) | voicing recall | gross pitch error | F0 error (cents) "
          "| F0 frame error | F1 error | F2 error | formant gross error |\n|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, d in r["per_source"].items():
        for model in ("codec", "mulaw_baseline"):
            if d:
                row(name, model, d[model])
    row("all", "codec", r)
    row("all", "mulaw_baseline", r["mulaw_baseline"])
    hp = r["hop_periodicity"]
    print(f"waveform autocorrelation at one frame ({r['clips']} clips): original {hp['original']:.3f}, "
          f"codec {hp['codec']:.3f}, mu-law {hp['mulaw_baseline']:.3f} (near 1: the decoding repeats every frame)")
    fl = r["frame_locked_share"]
    print(f"share of energy in one waveform repeated every frame: original {fl['original']:.3f}, "
          f"codec {fl['codec']:.3f}, mu-law {fl['mulaw_baseline']:.3f}")
    print(f"codebook usage (share of entries): {r['codebook_usage']}")
    print(f"code perplexity: {r['code_perplexity']}")
    print(f"winner per metric: {r['winner']}")
    if r.get("plot"):
        print(f"plot: {r['plot']}")
    return 0


def cmd_prepare(args) -> int:
    from halm.data.prepare import PrepareConfig, prepare

    cfg = PrepareConfig(codec=args.codec, n_codebooks=args.n_codebooks, frames_per_token=args.frames_per_token,
                        n_mels=args.n_mels, mel_source=args.mel_source, shard_size=args.shard_size,
                        test_share=args.test_share, dev_share=args.dev_share, min_seconds=args.min_seconds,
                        require_text=args.require_text)
    r = prepare(args.source, args.out, cfg, workers=args.workers, progress=not args.json, device=args.device)
    if args.json:
        print(json.dumps(r))
        return 0
    rate = f" at {r['realtime_factor']:.0f}x real time" if r["realtime_factor"] else " (nothing new: already complete)"
    print(f"{r['out']}: {r['items']} items{rate}; splits " +
          ", ".join(f"{k} {v['items']} items / {v['seconds'] / 60:.1f} min" for k, v in sorted(r["splits"].items())))
    if r["skipped"]:
        print(f"skipped {r['skipped']} files; reasons in {r['out']}/skipped.jsonl")
    return 0


def cmd_demo(args) -> int:
    from halm.demo import format_summary, run_demo

    out = args.out or ("demo_quick" if args.quick else "demo_out")
    summary = run_demo(out, quick=args.quick, seed=args.seed, progress=not args.json, codec=args.codec)
    print(json.dumps(summary) if args.json else format_summary(summary))
    return 0


def cmd_doctor(args) -> int:
    from halm.doctor import doctor, format_report

    r = doctor()
    print(json.dumps(r) if args.json else format_report(r))
    return 0


def cmd_presets(args) -> int:
    from halm.models import list_presets

    rows = list_presets()
    if args.json:
        print(json.dumps({"presets": rows}))
        return 0
    print("| preset | family | params | paper | about |\n|---|---|---|---|---|")
    for r in rows:
        paper = f"{r['paper_params'] / 1e6:.1f}M" if r["paper_params"] else ""
        print(f"| {r['preset']} | {r['family']} | {r['params'] / 1e6:.3f}M | {paper} | {r['about']} |")
    return 0


def cmd_train(args) -> int:
    from halm.train import train

    overrides = list(args.set)
    if args.mel:
        from halm.models import PRESETS

        if args.preset in PRESETS and PRESETS[args.preset][0] != "t2a":
            raise UserError("--mel adds the mel path to a t2a preset; whisper-gpt presets have it already")
        overrides.append("mel=true")
    r = train(args.preset, args.data, args.out, steps=args.steps, overrides=overrides, progress=not args.json)
    if args.json:
        print(json.dumps(r))
    else:
        val = f"; dev NLL {r['val_nll']:.3f}, acc {100 * r['val_acc']:.2f}%" if "val_nll" in r else ""
        rate = f" at {r['tokens_per_s']:.0f} tokens/s" if r["tokens_per_s"] else " (already complete)"
        print(f"{r['run']}: {r['preset']} ({r['params'] / 1e6:.2f}M params) trained to step {r['steps']}, "
              f"{r['tokens']} tokens{rate}{val}")
    return 0


def cmd_eval(args) -> int:
    from halm.evaluate import evaluate_run

    r = evaluate_run(args.run, args.data, args.split, mel_source=args.mel_source, weights=args.weights,
                     max_tokens=args.max_tokens, device=args.device, progress=not args.json)
    if args.json:
        print(json.dumps(r))
    else:
        mel = f", mel from {r['mel_source']}" if r["mel_source"] else ""
        print(f"{r['run']} ({r['preset']}, {r['params'] / 1e6:.2f}M) on {r['data']} [{r['split']}{mel}]: "
              f"NLL {r['nll']:.4f} nats/token, acc {100 * r['accuracy']:.2f}%, PPL {r['ppl']:.2f}, "
              f"{r['bits_per_second']:.0f} bits/s over {r['tokens']} tokens ({r['seconds']:.1f} s of audio)")
    return 0


def cmd_compare(args) -> int:
    from halm.evaluate import compare_runs

    r = compare_runs(args.runs, args.out, data=args.data, split=args.split, names=args.names, device=args.device,
                     progress=not args.json)
    print(json.dumps(r) if args.json else f"{r['table']}\n\nwrote {r['report']} and {r['curves']}")
    return 0


def _write_generation(audio, sr, out, png, frame_rate, prompt_seconds, title):
    import numpy as np
    import torch

    from halm.audio import save_audio
    from halm.audio.codec_eval import log_mel
    from halm.plots import plot_generation

    out = save_audio(out, audio, sr)
    png = png or str(out.with_suffix(".png"))
    plot_generation(log_mel(torch.from_numpy(np.ascontiguousarray(audio)), sr).T.numpy(), sr / 256, prompt_seconds,
                    png, title=title)
    return str(out), png


def _check_generate_args(args) -> None:
    """Bad sampling flags, one line each (raised before any model is loaded)."""
    checks = [(args.seconds > 0, f"--seconds must be > 0, got {args.seconds:g}"),
              (args.n >= 1, f"--n must be >= 1, got {args.n}"),
              (0 < args.top_p <= 1, f"--top-p must be in (0, 1], got {args.top_p:g}"),
              (args.top_k is None or args.top_k >= 0, f"--top-k must be >= 0 (0 = all), got {args.top_k}"),
              (args.temperature >= 0, f"--temperature must be >= 0 (0 = greedy), got {args.temperature:g}"),
              (args.prompt_seconds is None or args.prompt_seconds > 0,
               f"--prompt-seconds must be > 0, got {args.prompt_seconds}"),
              (Path(args.out).suffix.lower() == ".wav", f"--out {args.out}: give a .wav file name"),
              (not Path(args.out).is_dir(), f"--out {args.out} is a folder; give a .wav file name")]
    for ok, msg in checks:
        if not ok:
            raise UserError(msg)


def cmd_generate(args) -> int:
    from halm.audio import load_audio
    from halm.train import load_run

    _check_generate_args(args)
    model, rc = load_run(args.run, weights=args.weights, device=args.device)
    wav = sr = None
    if args.prompt:
        wav, sr = load_audio(args.prompt)
        if args.prompt_seconds:
            wav = wav[:, : int(args.prompt_seconds * sr)]
    if rc["family"] != "t2a":
        from halm.generate import generate_continuation

        if wav is None or args.text or args.captions:
            raise UserError(f"a {rc['family']} run continues audio: give --prompt (and no --text/--captions)")
        fine = None
        if args.full:
            fine = load_run(args.full, device=args.device)
            if fine[1]["family"] != "t2a" or fine[0].cfg.given_codebooks != 1:
                raise UserError(f"--full {args.full}: not a second-stage run (train one with --preset fine-s)")
        r = generate_continuation(model, rc, wav, sr, args.seconds, temperature=args.temperature,
                                  top_k=args.top_k if args.top_k is not None else 0, top_p=args.top_p, seed=args.seed,
                                  use_cache=not args.no_cache, fine=fine, progress=not args.json)
        out, png = _write_generation(r["audio"], r["sample_rate"], args.out, args.png,
                                     float(rc["data"]["frame_rate"]), r["prompt_tokens"] / float(rc["data"]["frame_rate"]),
                                     f"{rc['preset']} continuation of {args.prompt} (seed {args.seed}, T={args.temperature})")
        result = {"out": out, "png": png, "codebooks": int(r["codes"].shape[0]), "prompt_tokens": r["prompt_tokens"],
                  "new_tokens": r["new_tokens"],
                  "seconds_generated": r["seconds_generated"], "tokens_per_s": round(r["tokens_per_s"], 1),
                  "realtime_factor": round(r["realtime_factor"], 2), "seed": args.seed}
        print(json.dumps(result) if args.json else
              f"wrote {out} ({r['prompt_tokens']} prompt + {r['new_tokens']} new coarse tokens, decoded from "
              f"{r['codes'].shape[0]} codebook(s), "
              f"{r['tokens_per_s']:.0f} tokens/s = {r['realtime_factor']:.1f}x real time) and {png}")
        return 0

    from halm.generate import text_to_audio

    if args.captions:
        try:
            captions = [line.strip() for line in Path(args.captions).read_text(encoding="utf-8").splitlines() if line.strip()]
        except UnicodeDecodeError as e:
            raise UserError(f"{args.captions}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    elif args.text:
        captions = [args.text]
    else:
        raise UserError("a text-to-audio run needs --text \"a caption\" or --captions FILE (one caption per line)")
    if not captions:
        raise UserError(f"{args.captions}: no captions")
    captions = [c for c in captions for _ in range(args.n)]
    r = text_to_audio(model, rc, captions, args.seconds, cfg_coef=args.cfg, temperature=args.temperature,
                      top_k=args.top_k if args.top_k is not None else 250, top_p=args.top_p, seed=args.seed,
                      prompt_wav=wav, prompt_sr=sr, use_cache=not args.no_cache, progress=not args.json)
    frame_rate = float(rc["data"]["frame_rate"])
    outs = []
    for i, caption in enumerate(captions):
        out = args.out if len(captions) == 1 else str(Path(args.out).with_name(f"{Path(args.out).stem}_{i:03d}.wav"))
        png = args.png if len(captions) == 1 else None
        o, p = _write_generation(r["audio"][i], r["sample_rate"], out, png, frame_rate, r["prompt_frames"] / frame_rate,
                                 f"{rc['preset']}: \"{caption}\" (cfg {args.cfg}, seed {args.seed})")
        outs.append({"caption": caption, "out": o, "png": p})
        Path(o).with_suffix(".json").write_text(json.dumps({"caption": caption, "run": str(args.run), "cfg": args.cfg,
                                                            "seed": args.seed, "seconds": args.seconds}) + "\n")
    result = {"samples": outs, "seconds_generated": r["seconds_generated"], "steps": r["steps"],
              "frames_per_s": round(r["frames_per_s"], 1), "realtime_factor": round(r["realtime_factor"], 2),
              "cfg": args.cfg, "seed": args.seed}
    print(json.dumps(result) if args.json else
          "\n".join(f"wrote {o['out']} and {o['png']}  ({o['caption']})" for o in outs)
          + f"\n{len(outs)} x {r['seconds_generated']:.1f} s at {r['realtime_factor']:.2f}x real time")
    return 0



def _device_flag(s) -> None:
    s.add_argument("--device", default="auto", help="where models run: auto (CUDA when present, else the CPU), cpu, "
                   "cuda or cuda:N (default auto)")

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="halm",
        description="halm: train, evaluate and sample audio language models over neural-codec tokens "
        "(Whisper-GPT and text-to-audio LMs with representation regularization).",
    )
    p.add_argument("--version", action="version", version=f"halm {__version__}", help="print the version and exit")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    s = sub.add_parser("synth", help="make an offline corpus (speech, music or sound effects)",
                       description="Synthesise an offline corpus: DIR/audio/*.wav and DIR/manifest.jsonl. "
                       "Deterministic for a seed; rerunning the same command continues an interrupted run.")
    s.add_argument("kind", choices=["speech", "music", "sfx"],
                   help="speech: espeak-ng sentences; music: SoundFont-rendered compositions; sfx: procedural events")
    s.add_argument("--out", required=True, help="corpus folder (created; an existing one is continued)")
    s.add_argument("--minutes", type=float, required=True, help="total audio to reach, in minutes")
    s.add_argument("--seed", type=int, default=0, help="random seed (same seed, same corpus; default 0)")
    s.add_argument("--sample-rate", type=int, default=24000, help="sample rate of the written WAVs (default 24000)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.add_argument("--json", action="store_true", help="print one JSON object with the result and nothing else")
    s.set_defaults(func=cmd_synth)

    s = sub.add_parser("inspect", help="list what a data source holds",
                       description="Read a source (LibriSpeech tree, audio folder, JSONL manifest or synth corpus) "
                       "and report items, text coverage, splits, missing files and duplicate ids.")
    s.add_argument("source", help="a LibriSpeech folder, an audio folder, a .jsonl manifest or a halm synth corpus")
    s.add_argument("--check", action="store_true", help="also open every audio file: sample rates, duration, and the "
                   "files prepare would skip (unreadable, empty, non-finite, absurd level, too short) with the reason")
    s.add_argument("--min-seconds", type=float, default=0.1, help="--check: shorter audio is reported (default 0.1, "
                   "as prepare)")
    s.add_argument("--json", action="store_true", help="print one JSON object with the result and nothing else")
    s.set_defaults(func=cmd_inspect)

    s = sub.add_parser("mel", help="compute the causal log-mel slices of one audio file",
                       description="Causal log-mel front-end: one slice of r mel frames per codec frame; "
                       "slice t uses only samples before (t+1)*hop.")
    s.add_argument("audio", help="audio file (wav/flac/ogg)")
    s.add_argument("--sample-rate", type=int, default=24000, help="resample to this rate first (codec rate; default 24000)")
    s.add_argument("--hop-length", type=int, default=320, help="codec hop H in samples (default 320 = 75 Hz at 24 kHz)")
    s.add_argument("--frames-per-token", type=int, default=2, help="r: mel frames per codec frame; must divide H (default 2)")
    s.add_argument("--n-mels", type=int, default=80, help="mel bins (default 80, as Whisper)")
    s.add_argument("--n-fft", type=int, default=0, help="FFT size (default 0 = 2*H)")
    s.add_argument("--png", help="write a waveform + mel PNG here")
    s.add_argument("--npy", help="save the (T, r, n_mels) slices as float16 .npy here")
    s.add_argument("--json", action="store_true", help="print one JSON object with the result and nothing else")
    s.set_defaults(func=cmd_mel)

    s = sub.add_parser("eval-t2a", help="generate for a manifest's captions and score FAD / KL / CLAP / controllability",
                       description="Generate one clip per caption of MANIFEST with a t2a run (batched, seeded) and score "
                       "it against the manifest's reference audio in the judge's space (halm/eval_t2a.py).")
    s.add_argument("--run", required=True, help="a t2a run folder")
    s.add_argument("--captions", required=True, help="captioned source with reference audio (synth corpus or JSONL manifest)")
    s.add_argument("--n", type=int, default=32, help="captions to use, the first N by id (default 32)")
    s.add_argument("--cfg", type=float, default=3.0, help="classifier-free guidance coefficient (default 3.0)")
    s.add_argument("--seed", type=int, default=0, help="sampling seed; same seed, same scores (default 0)")
    s.add_argument("--seconds", type=float, help="seconds per generated clip (default: the judge's window, 6 s)")
    s.add_argument("--judge", help="judge directory (default: the shipped halm judge)")
    s.add_argument("--no-codec-ceiling", action="store_true", help="skip scoring the references encoded and decoded by "
                   "the run's codec (the ceiling generated audio can reach; on by default)")
    s.add_argument("--fad-model", default="judge", metavar="SPEC",
                   help="embeddings for FAD: judge (default), vggish:FILE (torchvggish's vggish-10086976.pth), "
                   "clap:DIR (Hugging Face CLAP folder) or laion-clap:FILE (needs the laion_clap package)")
    s.add_argument("--kl-model", default="judge", metavar="SPEC",
                   help="label posteriors for KL: judge (default: its attribute heads) or ast:DIR (Hugging Face AST "
                   "AudioSet classifier folder, 527 sigmoid labels)")
    s.add_argument("--clap-model", default="judge", metavar="SPEC",
                   help="joint text-audio space for the CLAP score: judge (default), clap:DIR or laion-clap:FILE")
    s.add_argument("--out", help="report folder (default RUN/eval_t2a): report.md, results.json, samples/, spectrograms.png")
    s.add_argument("--json", action="store_true", help="print one JSON object with the result and nothing else")
    _device_flag(s)
    s.set_defaults(func=cmd_eval_t2a)

    s = sub.add_parser("judge", help="train or evaluate the text-audio judge (embeddings for FAD/CLAP, attribute classifiers)",
                       description="halm's offline judge of generated audio: a CLAP-style audio encoder over log-mel "
                       "with the frozen MiniLM text tower, plus one classifier per caption attribute (halm/judge.py).")
    judge_sub = s.add_subparsers(dest="judge_command", metavar="ACTION", required=True)
    c = judge_sub.add_parser("train", help="train a judge on captioned corpora (halm synth music / sfx)",
                             description="Contrastive (InfoNCE) audio-caption training plus attribute heads; writes "
                             "DIR/config.json, DIR/model.safetensors, DIR/train_log.jsonl.")
    c.add_argument("--data", nargs="+", required=True, help="captioned sources (synth corpora or manifests)")
    c.add_argument("--out", required=True, help="judge directory to write")
    c.add_argument("--heldout", nargs="*", help="sources to report retrieval and attribute accuracy on")
    judge_defaults = {k: v.default for k, v in inspect.signature(train_judge_fn()).parameters.items()}
    c.add_argument("--steps", type=int, default=judge_defaults["steps"],
                   help=f"optimisation steps (default {judge_defaults['steps']})")
    c.add_argument("--batch-size", type=int, default=judge_defaults["batch_size"],
                   help=f"clips per step (default {judge_defaults['batch_size']})")
    c.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    c.add_argument("--json", action="store_true", help="print one JSON object with the result and nothing else")
    _device_flag(c)
    c.set_defaults(func=cmd_judge_train)
    c = judge_sub.add_parser("eval", help="held-out quality of a judge: text->audio R@1/R@5, attribute accuracy",
                             description="Embed the captioned clips of DATA and their captions with the judge; report "
                             "text->audio retrieval (R@1, R@5, chance) and each attribute head's accuracy.")
    c.add_argument("--judge", help="judge directory (default: the one shipped with halm)")
    c.add_argument("--data", nargs="+", required=True, help="captioned sources")
    c.add_argument("--json", action="store_true", help="print one JSON object with the result and nothing else")
    _device_flag(c)
    c.set_defaults(func=cmd_judge_eval)

    s = sub.add_parser("codec", help="train or evaluate a neural codec",
                       description="halm's own EnCodec-architecture codec: train it on your audio, or evaluate any codec.")
    codec_sub = s.add_subparsers(dest="codec_command", metavar="ACTION", required=True)
    c = codec_sub.add_parser("train", help="train a codec (resumable: rerun the same command to continue)",
                             description="Train an EncodecModel-architecture codec (24 kHz mono, hop 320) with EMA "
                             "codebooks, multi-scale mel + waveform + commitment losses. Rerunning continues.")
    c.add_argument("--data", nargs="+", required=True, help="one or more sources (synth corpora, folders, manifests)")
    c.add_argument("--out", required=True, help="run folder: train_state/, metrics.jsonl, codec/ (the export)")
    c.add_argument("--steps", type=int, help="total optimisation steps (default from the config: 12000)")
    c.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="override config fields, e.g. --set num_filters=32 batch_size=16; device=cuda|cpu|auto (default auto: CUDA when present) (see CodecTrainConfig)")
    c.add_argument("--init-from", metavar="RUN",
                   help="start a new --out from RUN's last checkpoint (weights, codebooks, optimizer, step) and go on "
                   "with this command's settings, e.g. to change the recipe mid-training; ignored once --out has a checkpoint")
    c.add_argument("--json", action="store_true", help="print one JSON object with the result and nothing else")
    c.set_defaults(func=cmd_codec_train)

    c = codec_sub.add_parser("eval", help="reconstruction quality and codebook use on held-out audio",
                             description="Encode and decode held-out clips; report mel L1, multi-resolution STFT "
                             "distance, SI-SNR, pitch (YIN: voicing recall, gross pitch error, F0 frame error), vowels "
                             "(LPC F1/F2 errors on voiced frames), frame-rate artefacts, per-codebook usage and "
                             "perplexity, bitrate, and a mu-law baseline at the same bitrate.")
    c.add_argument("--codec", default="halm-small",
                   help="codec: halm-small (shipped), a local folder (config.json + weights) or an original .th file")
    c.add_argument("--data", nargs="+", required=True, help="held-out sources (each reported on its own)")
    c.add_argument("--n-codebooks", type=int, help="codebooks to use (default: all of the codec)")
    c.add_argument("--max-items", type=int, default=40, help="clips per source at most (default 40)")
    c.add_argument("--plot", help="write a PNG of original vs reconstructed log-mel spectrograms here")
    c.add_argument("--wav", help="write originals, reconstructions and mu-law baselines as WAV into this folder")
    c.add_argument("--json", action="store_true", help="print one JSON object with the result and nothing else")
    c.set_defaults(func=cmd_codec_eval)

    s = sub.add_parser("prepare", help="tokenize a source into a dataset (codec codes + causal mel)",
                       description="Encode every clip of a source with the codec and compute its causal mel "
                       "slices; write a memory-mappable dataset with index.json. Resumable: rerun the same command "
                       "after an interruption. Bad files are skipped and listed in DATA/skipped.jsonl.")
    s.add_argument("--source", required=True, help="LibriSpeech tree, audio folder, JSONL manifest or synth corpus")
    s.add_argument("--out", required=True, help="dataset folder (an existing one is continued; settings must match)")
    s.add_argument("--codec", default="halm-small", help="codec: halm-small (shipped, default), a folder or a .th file")
    s.add_argument("--n-codebooks", type=int, help="codebooks to keep (default: all of the codec)")
    s.add_argument("--frames-per-token", type=int, default=2, help="r: mel frames per codec frame (default 2)")
    s.add_argument("--n-mels", type=int, default=80, help="mel bins (default 80)")
    s.add_argument("--mel-source", choices=["audio", "codec"], default="audio",
                   help="mel of the real audio (default) or the causal mel of the codec's coarse-only decoding (what the hybrid sees when it generates)")
    s.add_argument("--shard-size", type=int, default=128, help="items per shard, the unit of resumption (default 128)")
    s.add_argument("--test-share", type=float, default=0.05, help="hash-split share for test when the source has no split")
    s.add_argument("--dev-share", type=float, default=0.05, help="hash-split share for dev when the source has no split")
    s.add_argument("--min-seconds", type=float, default=0.1, help="skip shorter clips (default 0.1)")
    s.add_argument("--require-text", action="store_true", help="skip clips without text/caption (for text-to-audio)")
    s.add_argument("--workers", type=int, default=min(os.cpu_count() or 1, 8),
                   help="parallel worker processes of one thread each, one shard at a time (default: the CPU cores, "
                        "at most 8; on 2 cores two one-thread workers beat one two-thread worker: docs/results.md)")
    s.add_argument("--json", action="store_true", help="print one JSON object with the result and nothing else")
    _device_flag(s)
    s.set_defaults(func=cmd_prepare)

    s = sub.add_parser("doctor", help="what this installation has (torch, CUDA, bf16, synthesis, text encoder, shipped "
                       "models) and what each missing piece costs",
                       description="Checks without running a model: imports, files, hardware flags.")
    s.add_argument("--json", action="store_true", help="print one JSON object with the result and nothing else")
    s.set_defaults(func=cmd_doctor)

    s = sub.add_parser("presets", help="list the model presets with their parameter counts",
                       description="Every named preset: family, parameter count, the paper's count where it has one.")
    s.add_argument("--json", action="store_true", help="print one JSON object with the result and nothing else")
    s.set_defaults(func=cmd_presets)

    s = sub.add_parser("train", help="train a model on a prepared dataset (resumable)",
                       description="Train a preset on DATA's train split, validating on its dev split. Rerunning the "
                       "same command resumes from RUN/checkpoint. Multi-process: torchrun --nproc_per_node N -m halm "
                       "train ... (the global batch is the same as one process's).")
    s.add_argument("--preset", required=True, help="model preset (see `halm presets`), e.g. gpt-s, gpt-l, whisper-gpt, "
                   "t2a-s")
    s.add_argument("--data", required=True, help="a dataset made by `halm prepare`")
    s.add_argument("--out", required=True, help="run folder: config.json, checkpoint/, metrics.jsonl, tb/")
    s.add_argument("--steps", type=int, help="optimizer steps (default: the train config's 2000)")
    s.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="override model fields (n_layer=6, context=256, mel_zero=true; t2a: rr_weight=3.0, rr_pool=max, "
                   "rr_on=cfg, cfg_dropout=0.1, cfg_mode=batch, pattern=delay, text_encoder=t5:DIR, text_dim=768, …) or "
                   "train fields (lr=3e-4, batch_size=32, accum=2, amp=none, ema_decay=0.999, warmup_steps=…, "
                   "eval_every=…, ckpt_every=…, threads=…, seed=…)")
    s.add_argument("--mel", action="store_true", help="t2a presets: add the Whisper-GPT causal mel path (= --set mel=true)")
    s.add_argument("--json", action="store_true", help="print one JSON object with the result and nothing else")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("eval", help="NLL / accuracy / perplexity / bits per second of a run",
                       description="Score a run on every target of a split, in non-overlapping context windows per "
                       "item (token 0 of an item is never a target). PPL = exp(NLL), NLL in nats/token.")
    s.add_argument("--run", required=True, help="a run folder made by `halm train`")
    s.add_argument("--data", help="prepared dataset (default: the run's own); its codec must be the run's")
    s.add_argument("--split", default="test", help="train, dev or test (default test)")
    s.add_argument("--mel-source", choices=["stored", "codec"], default="stored",
                   help="hybrid only: the dataset's mel (default) or the mel of the codec's decoding of the coarse "
                   "tokens — what the model sees when it generates")
    s.add_argument("--weights", choices=["auto", "model", "ema"], default="auto",
                   help="which weights (auto: EMA when the run has them)")
    s.add_argument("--max-tokens", type=int, help="stop after about this many targets (default: all)")
    s.add_argument("--json", action="store_true", help="print one JSON object with the result and nothing else")
    _device_flag(s)
    s.set_defaults(func=cmd_eval)

    s = sub.add_parser("compare", help="paper-style table and validation curves of several runs",
                       description="Evaluate runs on the same split; write OUT/report.md (model, params, NLL, acc, "
                       "PPL, Δ vs the first run), OUT/curves.png (validation NLL vs tokens seen) and OUT/results.json.")
    s.add_argument("runs", nargs="+", help="run folders; the first is the baseline of the Δ columns")
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--data", help="prepared dataset for all runs (default: each run's own)")
    s.add_argument("--split", default="test", help="split to score (default test)")
    s.add_argument("--names", nargs="+", help="display names, one per run (default: folder names)")
    s.add_argument("--json", action="store_true", help="print one JSON object with the result and nothing else")
    _device_flag(s)
    s.set_defaults(func=cmd_compare)

    s = sub.add_parser("generate", help="continue an audio prompt, or make audio from text (t2a runs)",
                       description="gpt / whisper_gpt runs: encode --prompt with the run's codec, sample coarse tokens "
                       "(the hybrid in closed loop: each new token is decoded and its causal mel fed back), decode them. "
                       "t2a runs: sample all codebooks for --text or each line of --captions with classifier-free "
                       "guidance (optionally continuing --prompt). Writes a WAV and a spectrogram PNG per sample.")
    s.add_argument("--run", required=True, help="a run folder made by `halm train`")
    s.add_argument("--prompt", help="prompt audio file (required for gpt / whisper_gpt runs; optional for t2a)")
    s.add_argument("--text", help="t2a: the caption, e.g. \"a slow piano piece in A minor\"")
    s.add_argument("--captions", help="t2a: a text file with one caption per line (a batch)")
    s.add_argument("--n", type=int, default=1, help="t2a: samples per caption (default 1); several samples are "
                   "written as OUT_000.wav, OUT_001.wav, ...")
    s.add_argument("--cfg", type=float, default=3.0, help="t2a: classifier-free guidance coefficient; 1 = the "
                   "conditional model alone (default 3.0)")
    s.add_argument("--prompt-seconds", type=float, help="use only the first S seconds of the prompt")
    s.add_argument("--seconds", type=float, default=4.0, help="seconds to generate after the prompt (default 4)")
    s.add_argument("--out", required=True, help="output WAV (prompt + continuation; gpt / whisper_gpt decode the "
                   "coarse tokens only unless --full, t2a all its codebooks)")
    s.add_argument("--full", metavar="RUN", help="gpt / whisper_gpt: a second-stage run (--preset fine-s) that samples "
                   "codebooks 1..K-1 of the continuation given its coarse tokens, so that it is decoded from all K "
                   "codebooks (the prompt keeps its own)")
    s.add_argument("--png", help="spectrogram PNG (default: next to the WAV)")
    s.add_argument("--temperature", type=float, default=1.0, help="sampling temperature; 0 = greedy (default 1.0)")
    s.add_argument("--top-k", type=int, help="keep the k most likely tokens (0 = all; default: 0, t2a runs 250)")
    s.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (default 1.0 = off)")
    s.add_argument("--seed", type=int, default=0, help="sampling seed; same seed, same output (default 0)")
    s.add_argument("--weights", choices=["auto", "model", "ema"], default="auto", help="which weights (default auto)")
    s.add_argument("--no-cache", action="store_true", help="recompute the whole window each step (slow; for checks)")
    s.add_argument("--json", action="store_true", help="print one JSON object with the result and nothing else")
    _device_flag(s)
    s.set_defaults(func=cmd_generate)

    s = sub.add_parser("listen", help="a local page to listen through generated audio, or a blind A/B test",
                       description="Gallery: every WAV of --dir folders side by side, with captions, spectrograms "
                       "and the judge's reading (eval-t2a folders). A/B: the WAVs that --a and --b share by name, one "
                       "pair at a time, sides in seeded random order, votes appended to OUT/votes.jsonl; --summary "
                       "OUT tallies them (halm/listen.py). Plain HTML: works without JavaScript.")
    s.add_argument("--dir", action="append", help="a folder of WAVs to show (repeat for side-by-side columns)")
    s.add_argument("--a", help="A/B test: folder A (e.g. eval-t2a --out of the baseline)")
    s.add_argument("--b", help="A/B test: folder B (the same captions from the other model)")
    s.add_argument("--out", help="A/B test: folder for votes.jsonl")
    s.add_argument("--summary", metavar="OUT", help="tally the votes in OUT/votes.jsonl and exit")
    s.add_argument("--seed", type=int, default=0, help="A/B test: seed of the pair order and sides (default 0)")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 = any free port)")
    s.add_argument("--json", action="store_true", help="--summary: print one JSON object and nothing else")
    s.set_defaults(func=cmd_listen)

    s = sub.add_parser("demo", help="run the offline end-to-end demo",
                       description="Fully offline demo: synthesise small speech/music/sfx corpora and run the causal "
                       "mel front-end over them; tokenize the speech with the codec; train tiny GPT-S, GPT-L and "
                       "Whisper-GPT for the same token budget, compare them on the test split and continue a test "
                       "clip with each. Writes figures, WAVs, lm/report.md and summary.json.")
    s.add_argument("--out", help="output folder (default demo_out, or demo_quick with --quick; a rerun continues it)")
    s.add_argument("--quick", action="store_true", help="tiny sizes (well under a minute; what CI runs)")
    s.add_argument("--codec", default="halm-small", help="codec for the tokenization step (default: shipped halm-small)")
    s.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    s.add_argument("--json", action="store_true", help="print one JSON object with the result and nothing else")
    s.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except _user_errors() as e:
        if os.environ.get("HALM_DEBUG"):  # HALM_DEBUG=1 shows the traceback of a user error
            raise
        print(f"halm {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"halm {args.command}: interrupted; rerun the same command to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
