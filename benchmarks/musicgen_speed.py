"""halm's t2a against transformers' MusicGen with the same weights: sampling frames/s and training tokens/s.

One random MusicgenForConditionalGeneration (a 2-layer T5 text encoder, whose cost both sides share, and a
decoder of t2a-s's dimensions by default: 4 layers x 192, 4 codebooks of 1024, MLP 768, sinusoidal positions,
bias-free), imported into halm with halm.interop (so the two models compute the same logits; the script checks
it). Both measured in this run, same threads:
- sampling: one caption, batch 1, CFG 3.0 (conditional and null rows in one batch), top-k 250, KV cache, the
  delay pattern; halm.generate.generate_t2a vs MusicgenForConditionalGeneration.generate(guidance_scale=3)
  (its final codec decode stubbed out: halm's number has none);
- training: forward + backward + AdamW step of the decoder on batch B x S pattern steps with text, fp32.
Ratios are halm / transformers.

    python benchmarks/musicgen_speed.py [--layers 4 --width 192 --heads 4] [--seconds 4] [--threads 1] [--json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from types import SimpleNamespace

import torch
import torch.nn.functional as F


def build_pair(layers: int, width: int, heads: int, codebooks: int, vocab: int, context: int, seed: int = 0):
    """(transformers MusicgenForConditionalGeneration, halm T2A with its weights)."""
    from transformers import (
        EncodecConfig,
        MusicgenConfig,
        MusicgenDecoderConfig,
        MusicgenForConditionalGeneration,
        T5Config,
    )

    from halm.interop import state_from_musicgen, t2a_config_of_musicgen
    from halm.models import build_model

    torch.manual_seed(seed)
    t5 = T5Config(vocab_size=32128, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4)
    codec = EncodecConfig(codebook_size=vocab, target_bandwidths=[codebooks * 0.75])  # 75 Hz: 0.75 kbps per codebook
    dec = MusicgenDecoderConfig(vocab_size=vocab, max_position_embeddings=context, num_hidden_layers=layers,
                                ffn_dim=4 * width, num_attention_heads=heads, hidden_size=width, num_codebooks=codebooks,
                                pad_token_id=vocab, bos_token_id=vocab)
    hf = MusicgenForConditionalGeneration(MusicgenConfig(text_encoder=t5, audio_encoder=codec, decoder=dec)).eval()
    cfg = t2a_config_of_musicgen(hf.config, "t5:unused")
    ours = build_model("t2a", cfg)
    ours.load_state_dict(state_from_musicgen(hf.state_dict(), cfg))
    return hf, ours.eval()


def text_states(hf, batch: int, tokens: int = 12):
    ids = torch.randint(0, 32000, (batch, tokens), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(batch, tokens, dtype=torch.long)
    with torch.no_grad():
        emb = hf.text_encoder(input_ids=ids, attention_mask=mask).last_hidden_state
    return ids, mask, emb


def timed(fn, repeats: int = 1) -> float:
    fn()  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--width", type=int, default=192)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--codebooks", type=int, default=4)
    p.add_argument("--vocab", type=int, default=1024)
    p.add_argument("--seconds", type=float, default=4.0, help="audio sampled (default 4 s = 300 frames at 75 Hz)")
    p.add_argument("--batch", type=int, default=8, help="training batch (default 8)")
    p.add_argument("--steps", type=int, default=256, help="training pattern steps per sequence (default 256)")
    p.add_argument("--train-repeats", type=int, default=3, help="timed training steps (default 3)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--json", action="store_true", help="one JSON object")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    from halm.generate import generate_t2a

    hf_logging.set_verbosity_error()
    frames = int(round(args.seconds * 75))
    hf, ours = build_pair(args.layers, args.width, args.heads, args.codebooks, args.vocab,
                          context=max(frames, args.steps) + args.codebooks + 8)
    K, V = args.codebooks, args.vocab

    # the same logits (else the comparison would be between different computations)
    ids, mask, emb = text_states(hf, 2)
    codes = torch.randint(0, V, (2, K, 40), generator=torch.Generator().manual_seed(2))
    inputs, targets, _ = ours.pattern_inputs(codes)
    with torch.no_grad():
        a = ours(inputs, *ours.condition(emb, mask.bool()))
        b = hf(input_ids=ids, attention_mask=mask, decoder_input_ids=inputs.reshape(-1, inputs.shape[-1])).logits
    max_diff = float((a - b.reshape(a.shape)).abs().max())
    assert max_diff < 1e-3, f"the two models disagree (max |logit diff| {max_diff})"

    # sampling: batch 1, CFG 3, top-k 250, KV cache
    ids1, mask1, emb1 = text_states(hf, 1)

    def ours_sample():
        generate_t2a(ours, emb1, mask1.bool(), frames, cfg_coef=3.0, top_k=250, seed=0)

    # transformers' generate builds the CFG batch itself (each caption + zeroed, masked text); its final codec decode
    # is left out (halm's number has none either): the codec's decode is replaced by a stub for the timing
    hf.audio_encoder.decode = lambda codes, **kw: SimpleNamespace(audio_values=torch.zeros(1, 1, 1))

    def hf_sample():
        with torch.no_grad():
            hf.generate(input_ids=ids1, attention_mask=mask1, do_sample=True, top_k=250, guidance_scale=3.0,
                        max_new_tokens=frames + K - 1, min_new_tokens=frames + K - 1)

    sample_rows = [{"side": side, "frames_per_s": round(frames / timed(fn), 1)}
                   for side, fn in (("halm", ours_sample), ("transformers", hf_sample))]

    # training: forward + backward + AdamW on B x S steps, fp32
    T = args.steps - K + 1
    codes = torch.randint(0, V, (args.batch, K, T), generator=torch.Generator().manual_seed(3))
    inputs, targets, _ = ours.pattern_inputs(codes)
    ids_b, mask_b, emb_b = text_states(hf, args.batch)
    ours.train()
    hf.decoder.train()
    opt_ours = torch.optim.AdamW(ours.parameters(), lr=1e-4)
    opt_hf = torch.optim.AdamW(list(hf.decoder.parameters()) + list(hf.enc_to_dec_proj.parameters()), lr=1e-4)

    def ours_train():
        logits = ours(inputs, *ours.condition(emb_b, mask_b.bool()))  # (B, K, S, V)
        F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1), ignore_index=-100).backward()
        opt_ours.step()
        opt_ours.zero_grad(set_to_none=True)

    def hf_train():
        enc = hf.enc_to_dec_proj(emb_b)
        logits = hf.decoder(input_ids=inputs.reshape(-1, inputs.shape[-1]), encoder_hidden_states=enc,
                            encoder_attention_mask=mask_b).logits
        F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1), ignore_index=-100).backward()
        opt_hf.step()
        opt_hf.zero_grad(set_to_none=True)

    steps_per_call = args.batch * args.steps
    train_rows = [{"side": side, "steps_per_s": round(steps_per_call / timed(fn, args.train_repeats), 1)}
                  for side, fn in (("halm", ours_train), ("transformers", hf_train))]
    ratios = {"sampling": sample_rows[0]["frames_per_s"] / sample_rows[1]["frames_per_s"],
              "training": train_rows[0]["steps_per_s"] / train_rows[1]["steps_per_s"]}
    meta = {"decoder": f"{args.layers} x {args.width}, {K} codebooks of {V}", "frames": frames,
            "train_batch": f"{args.batch} x {args.steps} steps", "threads": args.threads, "max_logit_diff": max_diff,
            "torch": torch.__version__, "transformers": __import__("transformers").__version__,
            "machine": platform.processor() or platform.machine()}
    if args.json:
        print(json.dumps({"meta": meta, "sampling": sample_rows, "training": train_rows,
                          "ratios": {k: round(v, 2) for k, v in ratios.items()}}))
        return
    print(f"MusicGen decoder {meta['decoder']}, same weights (max |logit diff| {max_diff:.1e}), {args.threads} "
          f"threads, torch {torch.__version__}\n")
    print(f"| | halm | transformers | halm / transformers |\n|---|---|---|---|\n"
          f"| sampling, frames/s (batch 1, CFG 3, top-k 250, {frames} frames) | {sample_rows[0]['frames_per_s']} | "
          f"{sample_rows[1]['frames_per_s']} | {ratios['sampling']:.2f}x |\n"
          f"| training, pattern steps/s (batch {meta['train_batch']}, fp32, AdamW) | {train_rows[0]['steps_per_s']} | "
          f"{train_rows[1]['steps_per_s']} | {ratios['training']:.2f}x |")


if __name__ == "__main__":
    main()
