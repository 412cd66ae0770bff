#!/usr/bin/env python3
"""Copy a trained run into the package as a named shipped run: config.json + fp16 weights, no optimizer.

    python scripts/ship_run.py RUN/best halm/assets/t2a_halm_sfx_small [--about docs.json]

The folder then loads by its name (halm.runs.SHIPPED_RUNS) in `halm generate / eval / eval-t2a` and
`halm.load`. --about merges a JSON object (scores, the commands that made the run) into config.json
under "shipped".
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main():
    from safetensors.torch import load_file

    from halm.checkpoint import save_weights
    from halm.runs import checkpoint_dir, read_run_config

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run")
    p.add_argument("out")
    p.add_argument("--about", help="a JSON file merged into config.json under 'shipped'")
    args = p.parse_args()
    rc = read_run_config(args.run)
    ck = checkpoint_dir(Path(args.run))
    if ck is None:
        raise SystemExit(f"{args.run}: no checkpoint")
    name = "ema" if (ck / "ema.safetensors").exists() else "model"
    state = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in load_file(str(ck / f"{name}.safetensors")).items()}
    out = Path(args.out)
    (out / "checkpoint").mkdir(parents=True, exist_ok=True)
    save_weights(state, str(out / "checkpoint" / "model.safetensors"))
    best = Path(args.run) / "best.json"
    rc["shipped"] = {"from_step": json.loads(best.read_text())["step"] if best.exists() else rc["train"]["steps"],
                     "weights": f"{name} weights in fp16",
                     **(json.loads(Path(args.about).read_text()) if args.about else {})}
    rc["data"]["path"] = Path(rc["data"]["path"]).name  # no machine path in the package
    (out / "config.json").write_text(json.dumps(rc, indent=2) + "\n")
    size = (out / "checkpoint" / "model.safetensors").stat().st_size
    print(f"wrote {out} ({size / 1e6:.1f} MB of weights)")


if __name__ == "__main__":
    main()
