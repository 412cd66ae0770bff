"""The GPU benchmark a task with a device will run first (benchmarks/t2a_scale_speed.py), on a tiny preset on the
CPU: it runs end to end and reports consistent numbers."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_t2a_scale_speed_runs_on_the_cpu_and_reports_mfu_against_the_given_peak():
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "t2a_scale_speed.py"), "--device", "cpu", "--presets",
                        "tiny-t2a", "--batch", "2", "--steps", "1", "--seconds", "0.5", "--sample-batch", "1",
                        "--peak-tflops", "2", "--threads", "1", "--json"], capture_output=True, text=True, check=True)
    row = json.loads(r.stdout)["rows"][0]
    assert row["preset"] == "tiny-t2a" and row["precision"] in ("fp32", "bf16 autocast")
    assert abs(row["train_codes_per_s"] - row["train_pattern_steps_per_s"] * row["codebooks"]) <= 0.5  # (both rounded)
    assert abs(row["mfu"] - 6 * row["params"] * row["train_pattern_steps_per_s"] / 2e12) < 1e-4
    assert row["sample_frames"] == 38 and row["sample_frames_per_s"] > 0
