"""Sampling: small logit filters, one sampling loop with a KV cache, and the closed-loop mel of the hybrid.

The hybrid was trained on (token t, mel slice t) pairs. When it generates, there is no real audio for
the new tokens, so after each sampled token we decode the newest frame with the codec and compute its
causal mel slice (halm.audio.codec_mel.ClosedLoopMel): the model always sees the mel of what it
generated. The codec decoder streams (it keeps its layers' state and decodes only the new frame), so
a step costs the same at second 1 and at minute 10.

Legend: B batch, T steps, r mel frames per step, M mel bins, V vocab.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from tqdm import tqdm


# ---- logit filters (each a small function with its own test) ------------------------------------
def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits of each row (ties at the k-th value are kept); k <= 0 keeps all."""
    if k <= 0 or k >= logits.size(-1):
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filter: keep the smallest set of most likely tokens whose probability reaches p (always >= 1)."""
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = sorted_logits.softmax(-1)
    mass_before = probs.cumsum(-1) - probs  # probability of the tokens ranked above this one
    drop_sorted = mass_before >= p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """logits (B, V) -> tokens (B,). temperature 0 = greedy (argmax)."""
    logits = logits.float()
    if temperature <= 0:
        return logits.argmax(-1)
    logits = top_p_filter(top_k_filter(logits / temperature, top_k), top_p)
    return torch.multinomial(logits.softmax(-1), 1, generator=generator)[:, 0]


# ---- the sampling loop -------------------------------------------------------------------------
@torch.no_grad()
def generate(model, tokens: torch.Tensor, n_new: int, mel: torch.Tensor | None = None, mel_fn=None,
             temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, seed: int = 0, use_cache: bool = True,
             progress: bool = False) -> torch.Tensor:
    """Continue `tokens` (B, T0 >= 1) by n_new tokens; returns (B, T0 + n_new).

    The hybrid also needs `mel` (B, T0, r, M) for the prompt and `mel_fn(tokens (B, T)) -> (B, r, M)`
    for each generated token (ClosedLoopMel). Past the context, the window slides: the cache is
    refilled with the last context/2 steps and generation goes on. Deterministic for a seed.
    """
    model.eval()
    device = next(model.parameters()).device
    C = model.cfg.context
    B, T0 = tokens.shape
    if T0 < 1:
        raise ValueError("generation needs a prompt of at least one token")
    if model.uses_mel and (mel is None or mel_fn is None):
        raise ValueError("the hybrid needs the prompt's mel and a mel_fn for the generated tokens (ClosedLoopMel)")
    gen = torch.Generator(device=device).manual_seed(seed)
    toks = torch.empty(B, T0 + n_new, dtype=torch.long, device=device)
    toks[:, :T0] = tokens.to(device)
    mels = None
    if model.uses_mel:
        mels = torch.empty((B, T0 + n_new) + tuple(mel.shape[2:]), device=device)
        mels[:, :T0] = mel.to(device)

    def run(a: int, b: int, cache):  # logits of the last step after feeding steps a..b-1
        return model(toks[:, a:b], mels[:, a:b] if mels is not None else None, cache)[:, -1]

    cache = model.new_cache(B, C, device=device) if use_cache else None
    start = max(0, T0 - C)
    logits = run(start, T0, cache)
    n = T0
    for _ in tqdm(range(n_new), desc="generate", disable=not progress, dynamic_ncols=True):
        toks[:, n] = sample_next(logits, temperature, top_k, top_p, gen)
        n += 1
        if n == T0 + n_new:
            break
        if mels is not None:
            mels[:, n - 1] = mel_fn(toks[:, :n]).to(device)
        if not use_cache:
            logits = run(max(0, n - C), n, None)
        elif cache.pos < C:
            logits = run(n - 1, n, cache)
        else:  # context full: slide to the last C/2 steps and refill the cache
            cache.reset()
            logits = run(n - C // 2, n, cache)
    return toks


def generate_continuation(model, run_config: dict, prompt_wav: np.ndarray, prompt_sr: int, seconds: float,
                          codec=None, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, seed: int = 0,
                          use_cache: bool = True, window: int = 8, progress: bool = False) -> dict:
    """Prompt audio -> continuation: encode the prompt with the run's codec, sample, decode the coarse tokens."""
    from halm.audio import MelConfig, causal_log_mel, resample
    from halm.audio.codec import Codec, CodecError
    from halm.audio.codec_mel import ClosedLoopMel

    info = run_config["data"]["codec"]
    if codec is None:
        codec = Codec.load(info["name"])
    if codec.info().weights_sha256 != info["weights_sha256"]:
        raise CodecError(f"codec {codec.name} is not the one the run was trained with ({info['name']}, "
                         f"weights {info['weights_sha256']})")
    mel_cfg = MelConfig.from_dict(run_config["data"]["mel"])
    wav = resample(np.asarray(prompt_wav, dtype=np.float32), prompt_sr, codec.sample_rate)
    wav = wav.mean(0, keepdims=True) if wav.ndim == 2 else wav[None]  # (1, N) mono
    x = torch.from_numpy(wav)[None]  # (1, 1, N)
    prompt = codec.encode(x, codec.sample_rate)[:, 0].cpu()  # (1, T0) coarse codes
    mel = None
    closed = ClosedLoopMel(codec, mel_cfg, window) if model.uses_mel else None
    if model.uses_mel:
        if run_config["data"].get("mel_source") == "codec":  # the model was trained on decoded mel: prompt the same way
            mel = closed.full(prompt)
        else:
            mel = causal_log_mel(torch.from_numpy(wav[0]), mel_cfg)[None, : prompt.shape[1]]  # (1, T0, r, M)
    n_new = int(round(seconds * codec.frame_rate))
    t0 = time.perf_counter()
    toks = generate(model, prompt, n_new, mel=mel, mel_fn=closed, temperature=temperature, top_k=top_k, top_p=top_p,
                    seed=seed, use_cache=use_cache, progress=progress)
    dt = time.perf_counter() - t0
    audio = codec.decode(toks[:, None].to(codec.device))[0, 0].float().cpu().numpy()  # coarse-only audio
    return {"tokens": toks[0].cpu(), "prompt_tokens": prompt.shape[1], "new_tokens": n_new, "audio": audio,
            "sample_rate": codec.sample_rate, "seconds_generated": n_new / codec.frame_rate,
            "tokens_per_s": n_new / dt if dt > 0 else float("inf"),
            "realtime_factor": (n_new / codec.frame_rate) / dt if dt > 0 else float("inf")}
