"""Benchmark (not a test): `halm prepare` throughput in x real time.

    python benchmarks/prepare_throughput.py --minutes 5 --workers 1 2 [--batch-seconds 8 60]

Synthesises `minutes` of speech into a temporary folder, then prepares it (codec codes + causal
mel) from scratch once per (worker count, encoder batch size), with the codec given (default: the
shipped one). The wall time includes starting the workers and loading the codec in each.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import tempfile

import torch

from halm.data.prepare import PrepareConfig, prepare
from halm.data.synth import synthesize


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=5.0, help="minutes of speech to prepare (default 5)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to time (default 1 2)")
    ap.add_argument("--codec", default="halm-small", help="codec to encode with (default: shipped halm-small)")
    ap.add_argument("--batch-seconds", type=float, nargs="+", default=[PrepareConfig.batch_seconds],
                    help=f"seconds of audio per encoder batch to time (default {PrepareConfig.batch_seconds:g})")
    args = ap.parse_args()

    out = {"date": datetime.date.today().isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
           "torch": torch.__version__, "codec": args.codec, "minutes": args.minutes, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        synthesize("speech", f"{tmp}/speech", args.minutes, seed=0, progress=False)
        for bs in args.batch_seconds:
            for w in args.workers:
                cfg = PrepareConfig(codec=args.codec, shard_size=16, batch_seconds=bs)
                r = prepare(f"{tmp}/speech", f"{tmp}/data_w{w}_b{bs:g}", cfg, workers=w, progress=False)
                out["runs"].append({"workers": w, "batch_seconds": bs, "audio_s": r["new_seconds"],
                                    "elapsed_s": r["elapsed_s"], "x_realtime": r["realtime_factor"]})
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
