"""Training throughput of halm's gpt against transformers' GPT2LMHeadModel with the same dimensions.

Same batch, same context, same optimizer step (AdamW), fp32 and bf16 autocast; the ratio is ours /
GPT-2 measured in the same run. Also the hybrid (whisper-gpt), which has no peer.

    python benchmarks/train_speed.py [--preset gpt-s] [--batch 8] [--steps 6] [--threads 2] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time

import torch
import torch.nn.functional as F


def tokens_per_s(step_fn, tokens_per_step: int, steps: int) -> float:
    step_fn()  # warm-up
    t0 = time.perf_counter()
    for _ in range(steps):
        step_fn()
    return tokens_per_step * steps / (time.perf_counter() - t0)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="gpt-s", help="gpt preset to compare (default gpt-s)")
    p.add_argument("--batch", type=int, default=8, help="sequences per step (default 8)")
    p.add_argument("--steps", type=int, default=6, help="timed steps (default 6)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--json", action="store_true", help="one JSON object")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from transformers import GPT2Config, GPT2LMHeadModel

    from halm.models import build_model, preset_config

    family, cfg = preset_config(args.preset)
    ours = build_model(family, cfg)
    ref = GPT2LMHeadModel(GPT2Config(vocab_size=cfg.vocab_size, n_positions=cfg.context, n_embd=cfg.d_model,
                                     n_layer=cfg.n_layer, n_head=cfg.n_head, activation_function="gelu_new",
                                     resid_pdrop=0, embd_pdrop=0, attn_pdrop=0, tie_word_embeddings=False,
                                     attn_implementation="sdpa", bos_token_id=None, eos_token_id=None))
    hybrid = build_model(*preset_config("whisper-gpt"))
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, cfg.vocab_size, (args.batch, cfg.context + 1), generator=g)
    mel = torch.randn(args.batch, cfg.context + 1, 2, 80, generator=g)
    n_tok = args.batch * cfg.context

    def make_step(model, kind, amp):
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        ctx = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if amp else contextlib.nullcontext

        def step():
            with ctx():
                if kind == "ref":
                    logits = model(tokens[:, :-1]).logits
                    loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), tokens[:, 1:].reshape(-1))
                else:
                    loss, _ = model.loss({"tokens": tokens, "mel": mel})
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        return step

    rows = []
    for amp in (False, True):
        r_ours = tokens_per_s(make_step(ours, "ours", amp), n_tok, args.steps)
        r_ref = tokens_per_s(make_step(ref, "ref", amp), n_tok, args.steps)
        r_hyb = tokens_per_s(make_step(hybrid, "ours", amp), n_tok, args.steps)
        rows.append({"precision": "bf16 autocast" if amp else "fp32", "halm_gpt": round(r_ours), "transformers_gpt2": round(r_ref),
                     "ratio": round(r_ours / r_ref, 2), "halm_whisper_gpt": round(r_hyb)})
    if args.json:
        print(json.dumps({"preset": args.preset, "batch": args.batch, "context": cfg.context, "threads": args.threads,
                          "rows": rows}))
        return
    print(f"training tokens/s, {args.preset} dims (batch {args.batch} x {cfg.context}), {args.threads} threads, "
          f"torch {torch.__version__}\n\n| precision | halm gpt | transformers GPT-2 | ratio | halm whisper-gpt |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['precision']} | {r['halm_gpt']} | {r['transformers_gpt2']} | {r['ratio']}x | {r['halm_whisper_gpt']} |")


if __name__ == "__main__":
    main()
