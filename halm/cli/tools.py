"""`halm` commands: the installation and the demo: `doctor`, `demo`."""

from __future__ import annotations

import json

from halm.cli.common import add_json


def cmd_doctor(args) -> int:
    from halm.doctor import doctor, format_report

    r = doctor()
    print(json.dumps(r) if args.json else format_report(r))
    return 0


def cmd_demo(args) -> int:
    from halm.demo import format_summary, run_demo

    out = args.out or ("demo_quick" if args.quick else "demo_out")
    summary = run_demo(out, quick=args.quick, seed=args.seed, progress=not args.json, codec=args.codec)
    print(json.dumps(summary) if args.json else format_summary(summary))
    return 0


def register(sub) -> None:
    s = sub.add_parser("doctor", help="what this installation has (torch, CUDA, bf16, synthesis, text encoder, shipped "
                       "models) and what each missing piece costs",
                       description="Checks without running a model: imports, files, hardware flags.")
    add_json(s)
    s.set_defaults(func=cmd_doctor)

    s = sub.add_parser("demo", help="run the offline end-to-end demo",
                       description="Fully offline demo: synthesise small speech/music/sfx corpora and run the causal "
                       "mel front-end over them; tokenize the speech with the codec; train tiny GPT-S, GPT-L and "
                       "Whisper-GPT for the same token budget, compare them on the test split and continue a test "
                       "clip with each. Writes figures, WAVs, lm/report.md and summary.json.")
    s.add_argument("--out", help="output folder (default demo_out, or demo_quick with --quick; a rerun continues it)")
    s.add_argument("--quick", action="store_true", help="tiny sizes (well under a minute; what CI runs)")
    s.add_argument("--codec", default="halm-small", help="codec for the tokenization step (default: shipped halm-small)")
    s.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    add_json(s)
    s.set_defaults(func=cmd_demo)
