"""`halm` commands: the codec: `codec train`, `codec eval`."""

from __future__ import annotations

import dataclasses
import json

from halm.cli.common import add_json


def cmd_codec_train(args) -> int:
    from halm.codec.train import CodecTrainConfig, train_codec

    cfg = CodecTrainConfig().override(args.set)
    if args.steps is not None:
        cfg = dataclasses.replace(cfg, steps=args.steps)
    result = train_codec(cfg, args.data, args.out, progress=not args.json, init_from=args.init_from)
    print(json.dumps(result) if args.json else
          f"trained {result['steps']} steps on {result['train_seconds_of_audio'] / 60:.1f} min of audio; "
          f"codec: {args.out}/codec (use --codec {args.out}/codec)")
    return 0


def cmd_codec_eval(args) -> int:
    from halm.codec.eval import METRICS, evaluate_codec
    from halm.codec.model import Codec

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


def register(sub) -> None:
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
                   help="override config fields, e.g. --set num_filters=32 batch_size=16; device=cuda|cpu|auto (default auto: "
                   "CUDA when present) (see CodecTrainConfig)")
    c.add_argument("--init-from", metavar="RUN",
                   help="start a new --out from RUN's last checkpoint (weights, codebooks, optimizer, step) and go on "
                   "with this command's settings, e.g. to change the recipe mid-training; ignored once --out has a checkpoint")
    add_json(c)
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
    add_json(c)
    c.set_defaults(func=cmd_codec_eval)
