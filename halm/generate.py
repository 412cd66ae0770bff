"""Sampling: small logit filters, one sampling loop with a KV cache, and the closed-loop mel of the hybrid.

The hybrid was trained on (token t, mel slice t) pairs. When it generates, there is no real audio for
the new tokens, so after each sampled token we decode the newest frame with the codec and compute its
causal mel slice (halm.codec.closed_loop.ClosedLoopMel): the model always sees the mel of what it
generated. The codec decoder streams (it keeps its layers' state and decodes only the new frame), so
a step costs the same at second 1 and at minute 10.

Legend: B batch, T steps, r mel frames per step, M mel bins, V vocab.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from tqdm import tqdm

from halm.errors import UserError


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
    if 0 < top_k < logits.size(-1) and top_p >= 1.0:  # same distribution, softmax and draw over k values only
        vals, idx = torch.topk(logits if temperature == 1.0 else logits / temperature, top_k, dim=-1)
        # the k kept ids in vocabulary order, as a draw over the masked vocabulary sees them: two near-tied
        # logits that swap places under rounding (a cached vs a full forward, another CPU) give the same token
        idx, order = idx.sort(-1)
        vals = vals.gather(-1, order)
        return idx.gather(-1, torch.multinomial(vals.softmax(-1), 1, generator=generator))[:, 0]
    logits = top_p_filter(top_k_filter(logits / temperature, top_k), top_p)
    return torch.multinomial(logits.softmax(-1), 1, generator=generator)[:, 0]


def codes_only(logits: torch.Tensor, n_codes: int | None) -> torch.Tensor:
    """logits (..., V) with the ids >= n_codes at -inf: a model whose vocab is larger than its codec's codebook
    (allowed by `halm train`) never samples an id the codec cannot decode. None = every id of the vocab."""
    if n_codes is None or n_codes >= logits.size(-1):
        return logits
    return logits.masked_fill(torch.arange(logits.size(-1), device=logits.device) >= n_codes, float("-inf"))


def codebook_size(run_config: dict | None) -> int | None:
    """The codebook size of the codec a run was trained on (None without a run config)."""
    return run_config["data"]["codec"]["codebook_size"] if run_config else None


# ---- the sampling loop -------------------------------------------------------------------------
@torch.inference_mode()
def generate(model, tokens: torch.Tensor, n_new: int, mel: torch.Tensor | None = None, mel_fn=None,
             temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, seed: int = 0, use_cache: bool = True,
             n_codes: int | None = None, progress: bool = False) -> torch.Tensor:
    """Continue `tokens` (B, T0 >= 1) by n_new tokens; returns (B, T0 + n_new).

    n_codes: sample only ids below it (the codec's codebook size, `codebook_size(run_config)`); None = the
    whole vocab.
    The hybrid also needs `mel` (B, T0, r, M) for the prompt and `mel_fn(tokens (B, T)) -> (B, r, M)`
    for each generated token (ClosedLoopMel). Past the context, the window slides: the cache is
    refilled with the last context/2 steps and generation goes on. Deterministic for a seed.
    """
    model.eval()
    device = next(model.parameters()).device
    C = model.cfg.context
    B, T0 = tokens.shape
    if T0 < 1:
        raise UserError("generation needs a prompt of at least one token")
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
        toks[:, n] = sample_next(codes_only(logits, n_codes), temperature, top_k, top_p, gen)
        n += 1
        if n == T0 + n_new:
            break
        if mels is not None:
            mels[:, n - 1] = mel_fn(toks[:, :n]).to(device)
        start, logits = _next_window(run, start, n, C, cache)
    return toks


def _next_window(run, start: int, n: int, context: int, cache):
    """(window start, logits) after step n-1 joined the window start..n-1: one cached step, or with no cache the
    whole window again; a window that would exceed the context slides to its last context/2 steps (the cache
    refilled, text keys/values kept). The same windows with and without a cache: the same samples."""
    if n - start > context:
        start = n - context // 2
        if cache is not None:
            cache.reset()
        return start, run(start, n, cache)
    return start, run(n - 1, n, cache) if cache is not None else run(start, n, None)


def codec_of_run(run_config: dict, codec=None, device=None):
    """The codec a run was trained with (loaded by name, on `device`, unless given); refuses a codec with other
    weights."""
    from halm.codec.model import Codec, CodecError

    info = run_config["data"]["codec"]
    if codec is None:
        codec = Codec.load(info["name"])
        if device is not None:
            codec = codec.to(device)
    if codec.info().weights_sha256 != info["weights_sha256"]:
        raise CodecError(f"codec {codec.name} is not the one the run was trained with ({info['name']}, "
                         f"weights {info['weights_sha256']})")
    return codec


def complete_codebooks(fine, coarse: torch.Tensor, prompt: torch.Tensor | None = None, temperature: float = 1.0,
                       top_k: int = 250, top_p: float = 1.0, seed: int = 0, use_cache: bool = True,
                       progress: bool = False) -> torch.Tensor:
    """The second stage: coarse codes (B, T) -> codes (B, K, T) with codebooks 1..K-1 sampled by `fine`
    (a t2a model with given_codebooks=1, e.g. the fine-s preset) given codebook 0 at every frame.

    prompt (B, K, T0 < T): codes of frames already known in full (a continuation's prompt), kept as they are.
    """
    if fine.family != "t2a" or fine.cfg.given_codebooks != 1:
        raise UserError("the second stage must be a t2a run with given_codebooks=1 (e.g. the fine-s preset)")
    B, T = coarse.shape
    no_text = torch.zeros(B, 1, fine.cfg.text_dim), torch.ones(B, 1, dtype=torch.bool)  # only read by text models
    return generate_t2a(fine, *no_text, T, cfg_coef=1.0, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                        prompt=prompt, given=coarse[:, None], use_cache=use_cache,
                        n_codes=codebook_size(getattr(fine, "run_config", None)), progress=progress)


def generate_continuation(model, run_config: dict, prompt_wav: np.ndarray, prompt_sr: int, seconds: float,
                          codec=None, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, seed: int = 0,
                          use_cache: bool = True, window: int = 8, fine=None, progress: bool = False) -> dict:
    """Prompt audio -> continuation: encode the prompt with the run's codec, sample, decode the coarse tokens.

    fine: a second-stage model from halm.runs.load_run (it carries its run config): the continuation's
    codebooks 1..K-1 are sampled by it (complete_codebooks; the prompt keeps its own) and the audio is
    decoded from all K.
    """
    from halm.audio import MelConfig, causal_log_mel, mono_at
    from halm.codec.closed_loop import ClosedLoopMel

    codec = codec_of_run(run_config, codec, next(model.parameters()).device)
    if fine is not None:
        codec_of_run(fine.run_config, codec)  # the second stage must share the codec
    mel_cfg = MelConfig.from_dict(run_config["data"]["mel"])
    wav = mono_at(prompt_wav, prompt_sr, codec.sample_rate)[None]  # (1, N)
    x = torch.from_numpy(wav)[None]  # (1, 1, N)
    prompt_codes = codec.encode(x, codec.sample_rate).cpu()  # (1, K_codec, T0)
    prompt = prompt_codes[:, 0]  # (1, T0) coarse codes
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
                    seed=seed, use_cache=use_cache, n_codes=codec.codebook_size, progress=progress)
    dt = time.perf_counter() - t0
    codes = toks[:, None]  # (1, 1, T): coarse only
    if fine is not None:
        codes = complete_codebooks(fine, toks, prompt_codes[:, : fine.cfg.n_q], seed=seed, use_cache=use_cache,
                                   progress=progress)  # (1, K, T)
    audio = codec.decode(codes.to(codec.device))[0, 0].float().cpu().numpy()
    return {"tokens": toks[0].cpu(), "codes": codes[0].cpu(), "prompt_tokens": prompt.shape[1], "new_tokens": n_new,
            "audio": audio,
            "sample_rate": codec.sample_rate, "seconds_generated": n_new / codec.frame_rate,
            "tokens_per_s": n_new / dt if dt > 0 else float("inf"),
            "realtime_factor": (n_new / codec.frame_rate) / dt if dt > 0 else float("inf")}


# ---- text-to-audio: CFG, codebook patterns ----------------------------------------------------
def guided_logits(model, inputs: torch.Tensor, cond: tuple, null: tuple | None, coef: float, mel=None,
                  cache=None) -> torch.Tensor:
    """Logits of the t2a LM under classifier-free guidance: uncond + coef * (cond - uncond).

    inputs (B, K, s) pattern steps; cond = (ctx (B, L, D), mask); null = the null condition, or None for
    the conditional logits alone. Cond and uncond rows go through one batched forward (2B rows; the
    cache, if any, holds 2B rows). Returns (B, K, s, V).
    """
    if null is None:
        return model(inputs, cond[0], cond[1], mel, cache)
    B = inputs.shape[0]
    L = max(cond[0].shape[1], null[0].shape[1])

    def pad(ctx, mask):
        extra = L - ctx.shape[1]
        return (torch.nn.functional.pad(ctx, (0, 0, 0, extra)), torch.nn.functional.pad(mask, (0, extra)))

    (c, cm), (u, um) = pad(*cond), pad(*null)
    both = model(inputs.repeat(2, 1, 1), torch.cat([c, u]), torch.cat([cm, um]),
                 mel.repeat(2, 1, 1, 1) if mel is not None else None, cache)
    cond_l, uncond_l = both[:B], both[B:]
    return uncond_l + coef * (cond_l - uncond_l)


@torch.inference_mode()
def generate_t2a(model, text_emb: torch.Tensor, text_mask: torch.Tensor, n_frames: int, cfg_coef: float = 3.0,
                 temperature: float = 1.0, top_k: int = 250, top_p: float = 1.0, seed: int = 0,
                 prompt: torch.Tensor | None = None, mel_fn=None, prompt_mel: torch.Tensor | None = None,
                 given: torch.Tensor | None = None, use_cache: bool = True, n_codes: int | None = None,
                 progress: bool = False) -> torch.Tensor:
    """Sample n_frames frames of K codebooks from a t2a LM; returns codes (B, K, n_frames).

    text_emb (B, L, Dt) + text_mask: the frozen encoder's output for the captions (halm.models.text).
    cfg_coef: guidance; 1.0 = the conditional model alone (the uncond half is then skipped: same result).
    prompt (B, K, T0): codes of an audio prompt to continue (teacher-forced; T0 < n_frames).
    given (B, G, n_frames): a second stage's known codebooks (G = the model's given_codebooks), forced at
    every frame; only codebooks G..K-1 are sampled. A model without text ignores text_emb and cfg_coef.
    mel_fn / prompt_mel: for `mel=True` models, the closed-loop mel of the generated coarse tokens
    (halm.codec.closed_loop.ClosedLoopMel) and the prompt's per-frame mel (B, T0, r, M).
    Steps follow the model's codebook pattern; at step s the sampled token of codebook k is kept only
    where the pattern has a position. Past the context, the window slides (cache refilled with the
    last context/2 steps). n_codes: sample only ids below it (the codec's codebook size); None = the vocab.
    Deterministic for a seed.
    """
    from halm.models import patterns

    model.eval()
    cfg = model.cfg
    device = next(model.parameters()).device
    B, K, C, special = text_emb.shape[0], cfg.n_q, cfg.context, model.special
    table = patterns.frame_table(cfg.pattern, K, n_frames).to(device)  # (K, S)
    S = table.shape[1]
    valid = table >= 0
    # the codes known before sampling (prompt frames, given codebooks) as frames, then as pattern steps
    frames = torch.zeros(B, K, n_frames, dtype=torch.long, device=device)
    frame_known = torch.zeros(K, n_frames, dtype=torch.bool, device=device)
    T0, G = 0, cfg.given_codebooks
    if prompt is not None:
        T0 = prompt.shape[2]
        if not 0 < T0 < n_frames:
            raise UserError(f"the prompt has {T0} frames; it must be shorter than the {n_frames} to generate")
        frames[:, :, :T0] = prompt.to(device)[:, :K]
        frame_known[:, :T0] = True
    if G:
        if given is None or given.shape[0] != B or given.shape[1] < G or given.shape[2] != n_frames:
            raise ValueError(f"this model samples codebooks {G}..{K - 1} given the first {G}: pass given "
                             f"({B}, {G}, {n_frames}), got {None if given is None else tuple(given.shape)}")
        frames[:, :G] = given.to(device)[:, :G]
        frame_known[:G] = True
    known = valid & frame_known.gather(1, table.clamp(min=0))  # (K, S)
    seq = torch.where(known, patterns.build(frames, cfg.pattern, special)[0], special)  # (B, K, S)
    inputs = torch.cat([torch.full_like(seq[:, :, :1], special), seq[:, :, :-1]], dim=2)  # (B, K, S), filled as we go

    if model.uses_mel:
        if mel_fn is None:
            raise ValueError("this t2a model has the mel path: pass mel_fn (ClosedLoopMel of the run's codec)")
        r, M = cfg.frames_per_token, cfg.n_mels
        frame_mel = torch.zeros(B, n_frames, r, M, device=device)
        if prompt_mel is not None:
            frame_mel[:, :T0] = prompt_mel.to(device)[:, :T0]
        mel_frame = patterns.mel_frame_of_step(cfg.pattern, K, n_frames).to(device)  # (S,)
        have = T0 if prompt_mel is not None else 0  # frames of frame_mel filled
        coarse_steps = (table[0] >= 0).nonzero()[:, 0]  # (T,) the step holding codebook 0 of each frame

        def mel_for(a: int, b: int):
            nonlocal have
            need = int(mel_frame[b - 1])
            while have <= need:  # codebook 0 of frames <= need is known by step b-1 (the pattern guarantees it)
                frame_mel[:, have] = mel_fn(seq[:, 0, coarse_steps[: have + 1]]).to(device)  # coarse (B, have+1)
                have += 1
            f = mel_frame[a:b]
            return frame_mel[:, f.clamp(min=0)] * (f >= 0).float()[None, :, None, None]

    enc = model.condition(text_emb.to(device), text_mask.to(device))
    null = model.null_condition(B, device) if cfg_coef != 1.0 and cfg.has_text else None
    rows = B if null is None else 2 * B
    cache = model.new_cache(rows, C, device=device) if use_cache else None
    gen = torch.Generator(device=device).manual_seed(seed)

    def run(a: int, b: int, cache_):  # logits (B, K, V) of step b-1 after feeding inputs a..b-1
        mel = mel_for(a, b) if model.uses_mel else None
        return guided_logits(model, inputs[:, :, a:b], enc, null, cfg_coef, mel, cache_)[:, :, -1]

    if not bool((valid & ~known).any()):
        return patterns.revert(seq, cfg.pattern, n_frames)  # nothing to sample
    s0 = int((valid & ~known).any(0).float().argmax())  # the first step with a token to sample
    start = max(0, s0 + 1 - C)
    logits = run(start, s0 + 1, cache)
    for s in tqdm(range(s0, S), desc="generate", disable=not progress, dynamic_ncols=True):
        tok = sample_next(codes_only(logits.reshape(B * K, -1), n_codes), temperature, top_k, top_p, gen).view(B, K)
        fill = valid[:, s] & ~known[:, s]
        seq[:, :, s] = torch.where(fill[None], tok, seq[:, :, s])
        if s + 1 == S:
            break
        inputs[:, :, s + 1] = seq[:, :, s]
        start, logits = _next_window(run, start, s + 2, C, cache)  # s + 2 steps fed: the last one predicts s + 1
    return patterns.revert(seq, cfg.pattern, n_frames)


def text_to_audio(model, run_config: dict, captions: list[str], seconds: float, cfg_coef: float = 3.0,
                  temperature: float = 1.0, top_k: int = 250, top_p: float = 1.0, seed: int = 0,
                  prompt_wav: np.ndarray | None = None, prompt_sr: int | None = None, codec=None, encoder=None,
                  use_cache: bool = True, window: int = 8, progress: bool = False) -> dict:
    """Captions -> audio with a t2a run: encode the text, sample with CFG, decode all K codebooks.

    With prompt_wav, each caption's audio continues the prompt (its codes are teacher-forced).
    Returns codes (B, K, T), audio (B, N) float32, sample_rate, and the speed figures.
    """
    from halm.audio import MelConfig, causal_log_mel, mono_at
    from halm.codec.closed_loop import ClosedLoopMel
    from halm.models.text import load_text_encoder

    codec = codec_of_run(run_config, codec, next(model.parameters()).device)
    device = next(model.parameters()).device
    if encoder is None:
        encoder = load_text_encoder(model.cfg.text_encoder, device=device, max_tokens=model.cfg.text_max_tokens,
                                    dim=model.cfg.text_dim)
    emb, mask = encoder.encode(list(captions))
    B = len(captions)
    n_frames = int(round(seconds * codec.frame_rate))
    prompt, prompt_mel, closed = None, None, None
    if model.uses_mel:
        mel_cfg = MelConfig.from_dict(run_config["data"]["mel"])
        closed = ClosedLoopMel(codec, mel_cfg, window)
    if prompt_wav is not None:
        wav = mono_at(prompt_wav, prompt_sr, codec.sample_rate)[None]  # (1, N)
        codes = codec.encode(torch.from_numpy(wav)[None], codec.sample_rate)[:, : model.cfg.n_q].cpu()  # (1, K, T0)
        prompt = codes.expand(B, -1, -1)
        n_frames = prompt.shape[2] + n_frames
        if model.uses_mel and run_config["data"].get("mel_source") != "codec":
            prompt_mel = causal_log_mel(torch.from_numpy(wav[0]), mel_cfg)[None, : prompt.shape[2]].expand(B, -1, -1, -1)
    t0 = time.perf_counter()
    codes = generate_t2a(model, emb, mask, n_frames, cfg_coef=cfg_coef, temperature=temperature, top_k=top_k,
                         top_p=top_p, seed=seed, prompt=prompt, mel_fn=closed, prompt_mel=prompt_mel,
                         use_cache=use_cache, n_codes=codec.codebook_size, progress=progress)
    dt = time.perf_counter() - t0
    audio = codec.decode(codes.to(codec.device))[:, 0].float().cpu().numpy()  # (B, N)
    new = n_frames - (prompt.shape[2] if prompt is not None else 0)
    steps = codes.shape[2]
    return {"codes": codes.cpu(), "audio": audio, "sample_rate": codec.sample_rate, "frames": n_frames,
            "prompt_frames": n_frames - new, "seconds_generated": new / codec.frame_rate,
            "frames_per_s": B * new / dt if dt > 0 else float("inf"), "steps": steps,
            "realtime_factor": (B * new / codec.frame_rate) / dt if dt > 0 else float("inf")}


# ---- `.generate` of a model loaded with halm.load -----------------------------------------------------
def _continue_tokens(model, tokens: torch.Tensor, n_new: int, **kw) -> torch.Tensor:
    """Continue tokens (B, T0) by n_new tokens; keyword arguments as `generate` (n_codes: the run's codebook size)."""
    kw.setdefault("n_codes", codebook_size(model.run_config))
    return generate(model, tokens, n_new, **kw)


def _captions_to_audio(model, text: list[str] | str, seconds: float = 4.0, cfg: float = 3.0, seed: int = 0,
                       **kw) -> np.ndarray:
    """Audio (B, N) float32 at the run's codec rate for captions; keyword arguments as `text_to_audio`."""
    captions = [text] if isinstance(text, str) else list(text)
    return text_to_audio(model, model.run_config, captions, seconds, cfg_coef=cfg, seed=seed, **kw)["audio"]


def bind_generate(model):
    """Give a loaded model (with `.run_config`) its `.generate`: gpt / whisper_gpt `generate(tokens, n_new, ...)`,
    t2a `generate(text=[...], seconds=4, cfg=3, seed=0, ...)` -> audio. The model classes import no sampler;
    halm.load binds this."""
    import types

    fn = _captions_to_audio if model.family == "t2a" else _continue_tokens
    model.generate = types.MethodType(fn, model)
    return model
