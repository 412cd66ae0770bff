"""`halm` commands: corpora and datasets: `synth`, `inspect`, `mel`, `prepare`."""

from __future__ import annotations

import json
import os
from pathlib import Path

from halm.cli.common import add_device, add_json, defaults
from halm.errors import UserError


def cmd_synth(args) -> int:
    from halm.data.synth import synthesize

    stats = synthesize(args.kind, args.out, args.minutes, seed=args.seed, sample_rate=args.sample_rate,
                       progress=not args.json and not args.quiet, renderer=args.renderer, workers=args.workers)
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


def cmd_prepare(args) -> int:
    from halm.data.codec_mel import derive_codec_mel, is_prepared
    from halm.data.prepare import PrepareConfig, prepare

    if is_prepared(args.source):
        return _derive(args, derive_codec_mel)
    cfg = PrepareConfig(codec=args.codec, n_codebooks=args.n_codebooks, frames_per_token=args.frames_per_token,
                        n_mels=args.n_mels, mel_source=args.mel_source, shard_size=args.shard_size,
                        test_share=args.test_share, dev_share=args.dev_share, min_seconds=args.min_seconds,
                        require_text=args.require_text)
    r = prepare(args.source, args.out, cfg, workers=args.workers, progress=not args.json, device=args.device)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 reports for all
        return 0
    if args.json:
        print(json.dumps(r))
        return 0
    rate = f" at {r['realtime_factor']:.0f}x real time" if r["realtime_factor"] else " (nothing new: already complete)"
    print(f"{r['out']}: {r['items']} items{rate}; splits " +
          ", ".join(f"{k} {v['items']} items / {v['seconds'] / 60:.1f} min" for k, v in sorted(r["splits"].items())))
    if r["skipped"]:
        print(f"skipped {r['skipped']} files; reasons in {r['out']}/skipped.jsonl")
    return 0


def _derive(args, derive_codec_mel) -> int:
    """--source is a prepared dataset: its codec-mel version, from its codes (no audio is read)."""
    from halm.data.prepare import PrepareConfig

    src = json.loads((Path(args.source) / "index.json").read_text())
    if args.mel_source != "codec":
        raise UserError(f"--source {args.source} is a prepared dataset: it can only be turned into its codec-mel version "
                        f"(--mel-source codec); for other settings prepare its source {src.get('source')!r} again")
    d = defaults(PrepareConfig)
    given = {"--codec": (args.codec, d["codec"], src["codec"]["name"]),
             "--frames-per-token": (args.frames_per_token, d["frames_per_token"], src["mel"].get("frames_per_token")),
             "--n-mels": (args.n_mels, d["n_mels"], src["mel"].get("n_mels"))}
    for flag, (value, default, theirs) in given.items():
        if value != default and value != theirs:
            raise UserError(f"{flag} {value}: --source {args.source} is a prepared dataset with {flag} {theirs}; "
                            f"its codec mel keeps its settings")
    r = derive_codec_mel(args.source, args.out, workers=args.workers, progress=not args.json)
    if args.json:
        print(json.dumps(r))
        return 0
    rate = f" at {r['realtime_factor']:.1f}x real time" if r["realtime_factor"] else " (nothing new: already complete)"
    print(f"{r['out']}: the codec mel of {r['derived_from']}, {r['items']} items{rate}")
    if r["skipped"]:
        print(f"skipped {r['skipped']} files; reasons in {r['out']}/skipped.jsonl")
    return 0


def register(sub) -> None:
    s = sub.add_parser("synth", help="make an offline corpus (speech, music or sound effects)",
                       description="Synthesise an offline corpus: DIR/audio/*.wav and DIR/manifest.jsonl. "
                       "Deterministic for a seed; rerunning the same command continues an interrupted run.")
    s.add_argument("kind", choices=["speech", "music", "sfx"],
                   help="speech: espeak-ng sentences; music: SoundFont-rendered compositions; sfx: procedural events")
    s.add_argument("--out", required=True, help="corpus folder (created; an existing one is continued)")
    s.add_argument("--minutes", type=float, required=True, help="total audio to reach, in minutes")
    s.add_argument("--seed", type=int, default=0, help="random seed (same seed, same corpus; default 0)")
    s.add_argument("--sample-rate", type=int, default=24000, help="sample rate of the written WAVs (default 24000)")
    s.add_argument("--renderer", choices=["halm", "tinysoundfont"], help="music: the SoundFont renderer (default halm, "
                   "numpy, nothing to install; tinysoundfont remakes corpora of generator version 1 and needs "
                   "`pip install --no-deps tinysoundfont`)")
    s.add_argument("--workers", type=int, default=1, help="processes making clips (default 1; the corpus is the same for "
                   "any number)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    add_json(s)
    s.set_defaults(func=cmd_synth)

    s = sub.add_parser("inspect", help="list what a data source holds",
                       description="Read a source (LibriSpeech tree, audio folder, JSONL manifest or synth corpus) "
                       "and report items, text coverage, splits, missing files and duplicate ids.")
    s.add_argument("source", help="a LibriSpeech folder, an audio folder, a .jsonl manifest or a halm synth corpus")
    s.add_argument("--check", action="store_true", help="also open every audio file: sample rates, duration, and the "
                   "files prepare would skip (unreadable, empty, non-finite, absurd level, too short) with the reason")
    s.add_argument("--min-seconds", type=float, default=0.1, help="--check: shorter audio is reported (default 0.1, "
                   "as prepare)")
    add_json(s)
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
    add_json(s)
    s.set_defaults(func=cmd_mel)

    s = sub.add_parser("prepare", help="tokenize a source into a dataset (codec codes + causal mel)",
                       description="Encode every clip of a source with the codec and compute its causal mel "
                       "slices; write a memory-mappable dataset with index.json. Resumable: rerun the same command "
                       "after an interruption. Bad files are skipped and listed in DATA/skipped.jsonl.")
    s.add_argument("--source", required=True, help="LibriSpeech tree, audio folder, JSONL manifest or synth corpus; or a prepared "
                   "dataset with --mel-source codec: its codec-mel version from its codes, without encoding the audio again")
    s.add_argument("--out", required=True, help="dataset folder (an existing one is continued; settings must match)")
    from halm.data.prepare import PrepareConfig

    d = defaults(PrepareConfig)
    s.add_argument("--codec", default=d["codec"], help=f"codec: halm-small (shipped), a folder or a .th file (default {d['codec']})")
    s.add_argument("--n-codebooks", type=int, help="codebooks to keep (default: all of the codec)")
    s.add_argument("--frames-per-token", type=int, default=d["frames_per_token"],
                   help=f"r: mel frames per codec frame (default {d['frames_per_token']})")
    s.add_argument("--n-mels", type=int, default=d["n_mels"], help=f"mel bins (default {d['n_mels']})")
    s.add_argument("--mel-source", choices=["audio", "codec"], default=d["mel_source"],
                   help=f"audio: the mel of the real audio; codec: the causal mel of the codec's coarse-only decoding (what "
                   f"the hybrid sees when it generates) (default {d['mel_source']})")
    s.add_argument("--shard-size", type=int, default=d["shard_size"],
                   help=f"items per shard, the unit of resumption (default {d['shard_size']})")
    s.add_argument("--test-share", type=float, default=d["test_share"],
                   help=f"hash-split share for test when the source has no split (default {d['test_share']})")
    s.add_argument("--dev-share", type=float, default=d["dev_share"],
                   help=f"hash-split share for dev when the source has no split (default {d['dev_share']})")
    s.add_argument("--min-seconds", type=float, default=d["min_seconds"],
                   help=f"skip shorter clips (default {d['min_seconds']})")
    s.add_argument("--require-text", action="store_true", help="skip clips without text/caption (for text-to-audio)")
    s.add_argument("--workers", type=int, default=min(os.cpu_count() or 1, 8),
                   help="parallel worker processes of one thread each, one shard at a time (default: the CPU cores, "
                        "at most 8; on 2 cores two one-thread workers beat one two-thread worker: docs/results.md)")
    add_json(s)
    add_device(s)
    s.set_defaults(func=cmd_prepare)
