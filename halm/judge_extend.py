"""`halm judge extend`: heads for attributes a judge lacks (e.g. the speech heads: accent, timbre, rate, pitch),
fitted as linear probes on its frozen audio embedding. The base judge's weights stay as they are, so the
extended judge embeds, scores FAD / CLAP and reads its old heads exactly as the base does, and its
`model.safetensors` (judge_hash) is the base's byte for byte; the new heads go to probes.safetensors
(halm.judge.PROBES, probes_hash), which halm.judge.load_judge reads.

Legend: N clips, D embedding width, C classes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from halm.errors import UserError
from halm.judge import DEFAULT_JUDGE, embed_clips, evaluate_judge, judge_hash, load_clips, load_judge, probes_hash, save_judge


def fit_probe(x: torch.Tensor, y: torch.Tensor, n_classes: int, steps: int = 4000, lr: float = 0.05,
              weight_decay: float = 0.01, seed: int = 0) -> nn.Linear:
    """A linear head (D -> n_classes) fitted to embeddings x (N, D) and labels y (N,): full-batch AdamW on the
    cross-entropy, seeded initialisation, so the same inputs give the same head."""
    torch.manual_seed(seed)
    head = nn.Linear(x.shape[1], n_classes)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(head(x), y).backward()
        opt.step()
    return head.requires_grad_(False)


def extend_judge(sources: list[str], out: str | os.PathLike, base: str | os.PathLike | None = None, steps: int = 4000,
                 lr: float = 0.05, weight_decay: float = 0.01, seed: int = 0, heldout: list[str] | None = None,
                 progress: bool = True) -> dict:
    """Add heads for the attributes of `sources` that the judge `base` (default: the shipped one) lacks, e.g. the
    speech heads (accent, timbre, rate, pitch): linear probes fitted on its frozen audio embedding (fit_probe).
    Every other weight stays as it is, so the extended judge embeds, scores FAD / CLAP and reads its old heads
    exactly as the base does, and its judge_hash is the base's (the new heads: probes.safetensors, probes_hash).
    Clips whose attributes the base already reads are not used. Deterministic for a thread count (CPU, full
    batch, seeded);
    seconds of fitting once the clips are embedded, so there is no checkpoint to resume."""
    base_dir = Path(base) if base else DEFAULT_JUDGE
    if Path(out).resolve() == base_dir.resolve():
        raise UserError(f"--out {out} is the base judge: give another directory")
    judge = load_judge(base_dir)
    known = set(judge.cfg.attributes)
    clips = [c for c in load_clips(sources, judge.cfg.n_mels, progress) if set(c["attributes"]) - known]
    values: dict[str, set] = {}
    for c in clips:
        for k, v in c["attributes"].items():
            if k not in known:
                values.setdefault(k, set()).add(v)
    vocab = {k: sorted(v) for k, v in sorted(values.items()) if len(v) > 1}
    if not vocab:
        raise UserError(f"{sources}: no clip has an attribute (with 2+ values) that the judge lacks "
                        f"(it reads {sorted(known)})")
    with torch.no_grad():
        emb, _ = embed_clips(judge, clips)  # (N, D) the L2-normalised embedding every linear head reads
    fitted = {}
    for name, classes in vocab.items():
        have = [i for i, c in enumerate(clips) if name in c["attributes"]]
        y = torch.tensor([classes.index(clips[i]["attributes"][name]) for i in have])
        head = fit_probe(emb[have], y, len(classes), steps, lr, weight_decay, seed)
        judge.heads[name] = head
        fitted[name] = {"classes": len(classes), "clips": len(have),
                        "train_accuracy": round(float((head(emb[have]).argmax(-1) == y).float().mean()), 4)}
    judge.cfg.attributes = {**judge.cfg.attributes, **vocab}
    judge.cfg.probes = tuple(judge.cfg.probes) + tuple(vocab)
    base_config = json.loads((base_dir / "config.json").read_text())
    record = {"base": str(base or "halm-small"), "base_sha256": judge_hash(base_dir),
              "sources": [str(s) for s in sources], "steps": steps, "lr": lr, "weight_decay": weight_decay,
              "seed": seed, "heads": fitted}
    extra = {k: v for k, v in base_config.items() if k not in ("judge", "probes")}
    save_judge(judge, out, {**extra, "probes": [*base_config.get("probes", []), record]})
    if judge_hash(out) != record["base_sha256"]:
        raise RuntimeError(f"{out}: the extended judge's model.safetensors differs from its base's")
    result = {"judge": str(out), "base_sha256": record["base_sha256"], "probes_sha256": probes_hash(out),
              "heads": fitted}
    if heldout:
        result["heldout"] = evaluate_judge(load_judge(out), heldout, progress=progress)
    return result
