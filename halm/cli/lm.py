"""`halm` commands: the language models: `presets`, `train`, `eval`, `compare`, `generate`."""

from __future__ import annotations

import json
import os
from pathlib import Path

from halm.cli.common import add_device, add_json
from halm.errors import UserError


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
    if (args.preset is None) == (args.init_from is None):
        raise UserError("give --preset NAME (a new model) or --init-from RUN (fine-tune that run's model), not both")
    r = train(args.preset, args.data, args.out, steps=args.steps, overrides=overrides, progress=not args.json,
              init_from=args.init_from)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 reports for all
        return 0
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

    from halm.audio import save_audio
    from halm.audio.mel import display_mel
    from halm.plots import plot_generation

    out = save_audio(out, audio, sr)
    png = png or str(out.with_suffix(".png"))
    plot_generation(*display_mel(audio, sr), prompt_seconds, png, title=title)
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
    from halm.runs import load_run

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
            fine = load_run(args.full, device=args.device)[0]
            if fine.family != "t2a" or fine.cfg.given_codebooks != 1:
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
    result = {"samples": outs, "sample_rate": r["sample_rate"], "seconds_generated": r["seconds_generated"], "steps": r["steps"],
              "frames_per_s": round(r["frames_per_s"], 1), "realtime_factor": round(r["realtime_factor"], 2),
              "cfg": args.cfg, "seed": args.seed}
    print(json.dumps(result) if args.json else
          "\n".join(f"wrote {o['out']} and {o['png']}  ({o['caption']})" for o in outs)
          + f"\n{len(outs)} x {r['seconds_generated']:.1f} s at {r['realtime_factor']:.2f}x real time")
    return 0


def register(sub) -> None:
    s = sub.add_parser("presets", help="list the model presets with their parameter counts",
                       description="Every named preset: family, parameter count, the paper's count where it has one.")
    add_json(s)
    s.set_defaults(func=cmd_presets)

    s = sub.add_parser("train", help="train a model on a prepared dataset (resumable)",
                       description="Train a preset on DATA's train split, validating on its dev split. Rerunning the "
                       "same command resumes from RUN/checkpoint. Multi-process: torchrun --nproc_per_node N -m halm "
                       "train ... (the global batch is the same as one process's).")
    s.add_argument("--preset", help="model preset (see `halm presets`), e.g. gpt-s, gpt-l, whisper-gpt, t2a-s")
    s.add_argument("--init-from", metavar="RUN", help="instead of --preset: start from RUN's weights and model settings "
                   "(fine-tuning, e.g. an imported MusicGen; DATA must be tokenized with RUN's codec; --set may change "
                   "cfg_dropout, rr_weight, dropout, … and every train field)")
    s.add_argument("--data", required=True, help="a dataset made by `halm prepare`")
    s.add_argument("--out", required=True, help="run folder: config.json, checkpoint/, metrics.jsonl, tb/")
    s.add_argument("--steps", type=int, help="optimizer steps (default: the train config's 2000)")
    s.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="override model fields (n_layer=6, context=256, mel_zero=true; t2a: rr_weight=3.0, rr_pool=max, "
                   "rr_on=cfg, cfg_dropout=0.1, cfg_mode=batch, pattern=delay, text_encoder=t5:DIR, text_dim=768, …) or "
                   "train fields (lr=3e-4, batch_size=32, accum=2, amp=none, ema_decay=0.999, warmup_steps=…, "
                   "eval_every=…, ckpt_every=…, threads=…, seed=…; under torchrun fsdp=true shards the model, "
                   "checkpoint_activations=true saves memory)")
    s.add_argument("--mel", action="store_true", help="t2a presets: add the Whisper-GPT causal mel path (= --set mel=true)")
    add_json(s)
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
    add_json(s)
    add_device(s)
    s.set_defaults(func=cmd_eval)

    s = sub.add_parser("compare", help="paper-style table and validation curves of several runs",
                       description="Evaluate runs on the same split; write OUT/report.md (model, params, NLL, acc, "
                       "PPL, Δ vs the first run), OUT/curves.png (validation NLL vs tokens seen) and OUT/results.json.")
    s.add_argument("runs", nargs="+", help="run folders; the first is the baseline of the Δ columns")
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--data", help="prepared dataset for all runs (default: each run's own)")
    s.add_argument("--split", default="test", help="split to score (default test)")
    s.add_argument("--names", nargs="+", help="display names, one per run (default: folder names)")
    add_json(s)
    add_device(s)
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
    add_json(s)
    add_device(s)
    s.set_defaults(func=cmd_generate)
