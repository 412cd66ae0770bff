"""Benchmark (not a test): `halm prepare` throughput in x real time.

    python benchmarks/prepare_throughput.py --minutes 5 --workers 1 2 [--batch-seconds 8 60]
    python benchmarks/prepare_throughput.py --profile   # where encoding spends its time

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
from pathlib import Path

import numpy as np
import torch

from halm.data.prepare import PrepareConfig, prepare
from halm.data.synth import synthesize


def profile(codec_spec: str) -> None:
    """What a worker pays before its first shard, encode speed at 1 and 2 threads, and the operators of
    one 8 s encoder batch (2 clips of 4 s of synthetic speech) at one thread (torch profiler)."""
    import subprocess
    import sys

    from torch.profiler import profile as torch_profile

    from halm.audio.io import load_audio
    from halm.codec.model import Codec

    print(f"CPU: {cpu_description()}, {os.cpu_count()} cores")
    t = subprocess.run([sys.executable, "-c", "import time; t = time.perf_counter(); from halm.codec.model import Codec; "
                        f"Codec.load({codec_spec!r}); print(time.perf_counter() - t)"], capture_output=True, text=True, check=True)
    print(f"a fresh process importing halm and loading the codec: {float(t.stdout.split()[-1]):.1f} s")
    codec = Codec.load(codec_spec)
    with tempfile.TemporaryDirectory() as tmp:
        synthesize("speech", f"{tmp}/speech", 0.5, seed=0, progress=False)
        wavs = [load_audio(str(f), sample_rate=codec.sample_rate)[0][0] for f in sorted((Path(tmp) / "speech" / "audio").glob("*.wav"))]
    n = 4 * codec.sample_rate
    clip = np.concatenate(wavs)[: 2 * n]
    x = torch.from_numpy(np.ascontiguousarray(clip.reshape(2, 1, n)))  # (2, 1, 4 s)
    for threads in (1, 2):
        torch.set_num_threads(threads)
        codec.encode(x, codec.sample_rate)
        best = min(_timed(lambda: codec.encode(x, codec.sample_rate)) for _ in range(4))
        print(f"encode, {threads} thread(s): {8 / best:.1f}x real time")
    torch.set_num_threads(1)
    with torch_profile() as prof:
        for _ in range(3):
            codec.encode(x, codec.sample_rate)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


def _timed(fn) -> float:
    import time

    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def cpu_description() -> str:
    """The CPU model and the vector extensions that decide conv speed (from /proc/cpuinfo on Linux).

    The same encoder ran 2.65x faster on one 2-core VM than on another (docs/results.md): a figure
    without the CPU it was measured on cannot be compared with another."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown CPU"
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "unknown CPU")
    flags = next((set(line.split(":", 1)[1].split()) for line in info.splitlines() if line.startswith("flags")), set())
    isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile") if f in flags]
    return f"{model} ({', '.join(isa) or 'no AVX2'})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=5.0, help="minutes of speech to prepare (default 5)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to time (default 1 2)")
    ap.add_argument("--codec", default="halm-small", help="codec to encode with (default: shipped halm-small)")
    ap.add_argument("--batch-seconds", type=float, nargs="+", default=[PrepareConfig.batch_seconds],
                    help=f"seconds of audio per encoder batch to time (default {PrepareConfig.batch_seconds:g})")
    ap.add_argument("--profile", action="store_true", help="instead: where encoding spends its time (see profile())")
    args = ap.parse_args()
    if args.profile:
        return profile(args.codec)

    out = {"date": datetime.date.today().isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
           "cpu": cpu_description(),
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
