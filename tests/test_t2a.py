"""Text-to-audio LM: codebook patterns, text conditioning, cross-attention, CFG, the RR loss, sampling."""

import json
import math

import pytest
import torch

from halm.generate import generate_t2a, guided_logits
from halm.models import build_model, preset_config
from halm.models import patterns as P
from halm.models.layers import CrossAttention
from halm.models.t2a import pool, rr_loss


def tiny(**over):
    fam, cfg = preset_config("tiny-t2a", [f"{k}={json.dumps(v)}" for k, v in {"text_dim": 16, **over}.items()])
    torch.manual_seed(0)
    return build_model(fam, cfg).eval()


def text(B=3, L=5, D=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(B, L, D, generator=g)
    mask = torch.ones(B, L, dtype=torch.bool)
    if B > 1:
        mask[1, 3:] = False
    return emb, mask


# ---- patterns -----------------------------------------------------------------------------------
@pytest.mark.parametrize("pattern", P.PATTERNS)
@pytest.mark.parametrize("K", [1, 2, 4])
def test_pattern_build_revert_identity(pattern, K):
    T = 11
    codes = torch.randint(0, 50, (2, K, T))
    seq, valid = P.build(codes, pattern, special=50)
    assert seq.shape[2] == P.n_steps(pattern, K, T) and P.frames_for_steps(pattern, K, seq.shape[2]) == T
    assert int(valid.sum()) == 2 * K * T  # every code exactly once
    assert (seq[~valid] == 50).all()
    assert torch.equal(P.revert(seq, pattern, T), codes)
    logits = torch.randn(2, K, seq.shape[2], 7)
    back = P.revert(logits, pattern, T)  # trailing axes follow their codes
    assert torch.equal(P.build(back.argmax(-1), pattern, 50)[0][valid], logits.argmax(-1)[valid])


@pytest.mark.parametrize("pattern", P.PATTERNS)
def test_pattern_lengths_mask_padding(pattern):
    codes = torch.randint(0, 50, (2, 3, 9))
    seq, valid = P.build(codes, pattern, 50, lengths=torch.tensor([9, 4]))
    table = P.frame_table(pattern, 3, 9)
    assert not valid[1][(table >= 4)].any() and valid[1][(table >= 0) & (table < 4)].all()


@pytest.mark.parametrize("pattern", P.PATTERNS)
def test_no_position_predicts_what_its_inputs_contain(pattern):
    K, T = 4, 8
    ids = torch.arange(K * T).view(1, K, T)  # every code unique: its id names (codebook, frame)
    seq, valid = P.build(ids, pattern, special=-1)
    S = seq.shape[2]
    for s in range(S):
        seen = set(seq[0, :, :s][valid[0, :, :s]].tolist())  # what the inputs of step s hold
        for k in range(K):
            if valid[0, k, s]:
                target = int(seq[0, k, s])
                assert target not in seen
                if pattern != "parallel":  # delay/flatten: lower codebooks of the same frame come first
                    frame = target % T
                    assert all(j * T + frame in seen for j in range(k))


@pytest.mark.parametrize("pattern", P.PATTERNS)
def test_mel_frame_never_holds_a_target(pattern):
    K, T = 4, 10
    table = P.frame_table(pattern, K, T)
    mel = P.mel_frame_of_step(pattern, K, T)
    S = table.shape[1]
    for s in range(S):
        later = table[:, s:][table[:, s:] >= 0]
        assert int(mel[s]) < int(later.min())  # never audio that a target of step >= s encodes
        assert int(mel[s]) == int(later.min()) - 1  # and the freshest such frame
    if pattern == "delay":
        assert mel.tolist()[K:K + 3] == [0, 1, 2]


@pytest.mark.parametrize("pattern", P.PATTERNS)
def test_model_is_causal_over_pattern_steps(pattern):
    model = tiny(pattern=pattern, context=64)
    codes = torch.randint(0, 1024, (1, 4, 12))
    emb, mask = text(1)
    inputs, _, _ = model.pattern_inputs(codes)
    ctx, cm = model.condition(emb, mask)
    ref = model(inputs, ctx, cm)
    s = inputs.shape[2] // 2
    changed = inputs.clone()
    changed[:, :, s:] = torch.randint(0, 1024, changed[:, :, s:].shape)
    out = model(changed, ctx, cm)
    assert torch.equal(out[:, :, :s], ref[:, :, :s])
    assert not torch.allclose(out[:, :, s:], ref[:, :, s:])


def test_masked_positions_never_reach_the_loss():
    model = tiny()
    emb, mask = text(2)
    codes = torch.randint(0, 1024, (2, 4, 30))
    lengths = torch.tensor([30, 12])
    batch = {"codes": codes, "lengths": lengths, "text_emb": emb[:2], "text_mask": mask[:2]}
    loss_a, _ = model.loss(batch)
    codes_b = codes.clone()
    codes_b[1, :, 12:] = torch.randint(0, 1024, (4, 18))  # only padding changes
    loss_b, _ = model.loss({**batch, "codes": codes_b})
    assert torch.equal(loss_a, loss_b)
    _, targets, valid = model.pattern_inputs(codes, lengths)
    assert int((targets != -100).sum()) == int(valid.sum()) == 4 * (30 + 12)


# ---- conditioning and attention -----------------------------------------------------------------
def test_cross_attention_matches_torch_multihead_attention():
    torch.manual_seed(0)
    D, H = 32, 4
    ours = CrossAttention(D, H).eval()
    ref = torch.nn.MultiheadAttention(D, H, batch_first=True).eval()
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([ours.q.weight, ours.kv.weight]))
        ref.in_proj_bias.copy_(torch.cat([ours.q.bias, ours.kv.bias]))
        ref.out_proj.weight.copy_(ours.proj.weight)
        ref.out_proj.bias.copy_(ours.proj.bias)
    x, ctx = torch.randn(2, 6, D), torch.randn(2, 5, D)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]], dtype=torch.bool)
    want, _ = ref(x, ctx, ctx, key_padding_mask=~mask, need_weights=False)
    torch.testing.assert_close(ours(x, ctx, mask), want, atol=1e-5, rtol=1e-5)


def test_fully_masked_text_gives_no_nan_and_no_text_contribution():
    attn = CrossAttention(16, 2).eval()
    x, ctx = torch.randn(2, 4, 16), torch.randn(2, 3, 16)
    mask = torch.tensor([[1, 1, 0], [0, 0, 0]], dtype=torch.bool)
    y = attn(x, ctx, mask)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y[1], attn.proj.bias.expand(4, -1))  # attends to nothing: zero before proj


def test_null_condition_replaces_dropped_rows_only():
    model = tiny()
    with torch.no_grad():
        model.null_cond.normal_()
    emb, mask = text(3)
    ctx, cm = model.condition(emb, mask, torch.tensor([False, True, False]))
    full, fm = model.condition(emb, mask)
    assert torch.equal(ctx[[0, 2]], full[[0, 2]]) and torch.equal(cm[[0, 2]], fm[[0, 2]])
    assert torch.equal(ctx[1, 0], model.null_cond) and cm[1].tolist() == [True] + [False] * 4


def test_cached_decoding_equals_full_forward():
    for over in ({}, {"mel": True, "n_mels": 8, "mel_d": 16, "mel_heads": 2, "mel_layers": 1}):
        model = tiny(**over)
        codes = torch.randint(0, 1024, (2, 4, 20))
        emb, mask = text(2)
        inputs, _, _ = model.pattern_inputs(codes)
        mel = model.step_mel(torch.randn(2, 20, 2, 8), 20) if over else None
        ctx, cm = model.condition(emb, mask)
        full = model(inputs, ctx, cm, mel)
        cache = model.new_cache(2)
        n0 = 5  # a prefill, then one step at a time
        steps = [model(inputs[:, :, :n0], ctx, cm, mel[:, :n0] if mel is not None else None, cache)]
        for s in range(n0, inputs.shape[2]):
            steps.append(model(inputs[:, :, s:s + 1], ctx, cm, mel[:, s:s + 1] if mel is not None else None, cache))
        torch.testing.assert_close(torch.cat(steps, 2), full, atol=1e-5, rtol=1e-5)


# ---- RR loss ------------------------------------------------------------------------------------
def test_rr_loss_known_value_on_three_samples():
    t = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # cos: t12 = 0, t13 = t23 = 1/sqrt(2)
    a = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0]])  # cos: a12 = 1, a13 = a23 = 0
    # ordered off-diagonal pairs: 2 * ((0 - 1)^2 + (0.7071 - 0)^2 + (0.7071 - 0)^2) = 4, over B(B-1) = 6
    assert rr_loss(t, a).item() == pytest.approx(2 / 3, abs=1e-6)


def test_rr_loss_is_zero_when_the_similarity_structures_match():
    t = torch.randn(5, 8)
    q, _ = torch.linalg.qr(torch.randn(8, 8))
    a = 3.0 * t @ q  # rotated and scaled: same cosines
    assert rr_loss(t, a).item() == pytest.approx(0.0, abs=1e-10)


def test_rr_loss_gradient_flows_to_audio_only():
    t = torch.randn(4, 6, requires_grad=True)
    a = torch.randn(4, 5, requires_grad=True)
    rr_loss(t, a).backward()
    assert t.grad is None and a.grad is not None and a.grad.abs().sum() > 0


def test_masked_pooling():
    x = torch.tensor([[[1.0], [5.0], [3.0]]])
    m = torch.tensor([[True, False, True]])
    assert pool(x, m, "max").item() == 3.0 and pool(x, m, "mean").item() == 2.0


def test_loss_terms_follow_the_cfg_decision():
    emb, mask = text(3)
    batch = {"codes": torch.randint(0, 1024, (3, 4, 16)), "text_emb": emb, "text_mask": mask}
    model = tiny()
    loss, ex = model.loss({**batch, "drop": torch.ones(3, dtype=torch.bool)})
    assert {"l_uncond", "l_rr"} <= set(ex) and "l_cond" not in ex
    assert loss.item() == pytest.approx(ex["l_uncond"].item() + 3.0 * ex["l_rr"].item(), rel=1e-5)
    assert math.isclose(ex["l_uncond"].item(), sum(ex[f"nll_k{k}"].item() for k in range(4)) / 4, rel_tol=1e-5)
    loss, ex = model.loss({**batch, "drop": torch.zeros(3, dtype=torch.bool)})
    assert "l_cond" in ex and "l_rr" not in ex and loss.item() == pytest.approx(ex["l_cond"].item())
    _, ex = tiny(rr_on="all").loss({**batch, "drop": torch.zeros(3, dtype=torch.bool)})
    assert "l_rr" in ex  # the paper's negative ablation: RR on every step
    loss, ex = tiny(rr_weight=0.0).loss({**batch, "drop": torch.ones(3, dtype=torch.bool)})
    assert "l_rr" in ex and loss.item() == pytest.approx(ex["l_uncond"].item())  # logged, not optimised


def test_rr_gradient_reaches_the_lm_not_the_text():
    emb, mask = text(3)
    emb.requires_grad_(True)
    batch = {"codes": torch.randint(0, 1024, (3, 4, 16)), "text_emb": emb, "text_mask": mask,
             "drop": torch.ones(3, dtype=torch.bool)}
    with_rr, without = tiny().train(), tiny(rr_weight=0.0).train()  # the same weights (same seed)
    total, ex = with_rr.loss(batch)
    ce_only, _ = without.loss(batch)
    assert total.item() - ce_only.item() == pytest.approx(3.0 * ex["l_rr"].item(), rel=1e-4)
    total.backward()
    ce_only.backward()
    w = "stack.blocks.0.mlp.fc.weight"
    grad = dict(with_rr.named_parameters())[w].grad - dict(without.named_parameters())[w].grad
    assert grad.abs().max() > 1e-7  # RR moves the LM's weights...
    assert emb.grad is None or emb.grad.abs().sum() == 0  # ...and never the text (dropped rows, detached T)


# ---- sampling -----------------------------------------------------------------------------------
def test_cfg_coef_one_equals_conditional_logits():
    model = tiny()
    emb, mask = text(2)
    inputs, _, _ = model.pattern_inputs(torch.randint(0, 1024, (2, 4, 10)))
    cond = model.condition(emb[:2], mask[:2])
    null = model.null_condition(2)
    torch.testing.assert_close(guided_logits(model, inputs, cond, null, 1.0), model(inputs, *cond), atol=1e-5, rtol=1e-5)
    g3 = guided_logits(model, inputs, cond, null, 3.0)
    u = model(inputs, *null)
    torch.testing.assert_close(g3, u + 3.0 * (model(inputs, *cond) - u), atol=1e-4, rtol=1e-4)


def test_cfg_coef_zero_ignores_the_text_the_null_caption_floor():
    model = tiny()
    emb, mask = text(2)
    other, _ = text(2, seed=5)
    a = generate_t2a(model, emb[:2], mask[:2], 30, cfg_coef=0.0, seed=3)
    assert torch.equal(a, generate_t2a(model, other[:2], mask[:2], 30, cfg_coef=0.0, seed=3))
    assert not torch.equal(generate_t2a(model, emb[:2], mask[:2], 30, cfg_coef=1.0, seed=3),
                           generate_t2a(model, other[:2], mask[:2], 30, cfg_coef=1.0, seed=3))


def test_generation_is_seeded_uses_the_cache_correctly_and_keeps_the_prompt():
    model = tiny()
    emb, mask = text(2)
    a = generate_t2a(model, emb[:2], mask[:2], 40, seed=7)
    assert a.shape == (2, 4, 40) and a.max() < 1024
    assert torch.equal(a, generate_t2a(model, emb[:2], mask[:2], 40, seed=7))
    assert not torch.equal(a, generate_t2a(model, emb[:2], mask[:2], 40, seed=8))
    assert torch.equal(a, generate_t2a(model, emb[:2], mask[:2], 40, seed=7, use_cache=False))
    prompt = torch.randint(0, 1024, (2, 4, 10))
    c = generate_t2a(model, emb[:2], mask[:2], 30, seed=1, prompt=prompt)
    assert torch.equal(c[:, :, :10], prompt)
    long = generate_t2a(model, emb[:2], mask[:2], 200, seed=1)  # past the context of 128 steps: sliding window
    assert long.shape == (2, 4, 200)
    assert torch.equal(long, generate_t2a(model, emb[:2], mask[:2], 200, seed=1, use_cache=False))  # the same windows


def test_mel_variant_generates_in_closed_loop():
    model = tiny(mel=True, n_mels=8, mel_d=16, mel_heads=2, mel_layers=1)
    calls = []

    def mel_fn(coarse):  # the closed-loop mel sees codebook 0 of frames 0..n-1, one more frame per call
        calls.append(coarse.shape[1])
        return torch.full((coarse.shape[0], 2, 8), float(coarse.shape[1]))

    emb, mask = text(1)
    out = generate_t2a(model, emb[:1], mask[:1], 12, seed=0, mel_fn=mel_fn)
    assert out.shape == (1, 4, 12)
    assert calls == list(range(1, len(calls) + 1))  # extended one frame at a time
    assert calls[-1] == 12 - 1  # the last step (codebook 3 of frame 11) sees the mel of frame 10, no later


# ---- the second stage (given_codebooks = 1, no text): codebooks 1..K-1 from codebook 0 ---------------
def fine(**over):
    fam, cfg = preset_config("tiny-fine", [f"{k}={json.dumps(v)}" for k, v in over.items()])
    torch.manual_seed(0)
    return build_model(fam, cfg).eval()


def test_second_stage_shapes_and_loss_over_the_predicted_codebooks_only():
    model = fine()
    codes = torch.randint(0, 1024, (2, 4, 30))
    emb, mask = text(2, D=model.cfg.text_dim)
    batch = {"codes": codes, "lengths": torch.tensor([30, 21]), "text_emb": emb, "text_mask": mask}
    loss, extra = model.loss(batch)
    assert {"nll_k1", "nll_k2", "nll_k3"} <= set(extra) and "nll_k0" not in extra and "l_rr" not in extra
    torch.testing.assert_close(loss, torch.stack([extra[f"nll_k{k}"] for k in (1, 2, 3)]).mean())
    with torch.no_grad():
        model.text_proj.weight.normal_()  # no text reaches the loss
    assert torch.equal(model.loss({**batch, "text_emb": torch.randn_like(emb)})[0], loss)
    inputs, _, _ = model.pattern_inputs(codes)
    ctx, cm = model.condition(emb, mask)
    logits = model(inputs, ctx, cm)
    assert ctx.shape == (2, 1, 64) and logits.shape == (2, 4, 33, 1024)
    # the given codebook has no head (no unused parameters): its logits are zeros, never a target
    assert not any(p.numel() for p in model.heads[0].parameters()) and not logits[:, 0].any()
    # a checkpoint made when it had one still loads, its extra head dropped
    old = {**model.state_dict(), "heads.0.weight": torch.randn(1024, model.cfg.d_model)}
    fine().load_state_dict(old)


def test_second_stage_fine_codes_see_their_frames_coarse_code_and_no_later_fine_code():
    model = fine()
    codes = torch.randint(0, 1024, (1, 4, 20))
    ctx, cm = model.null_condition(1)
    t, k = 7, 2  # codebook 2 of frame 7 is predicted at step t + k
    ref = model(model.pattern_inputs(codes)[0], ctx, cm)[0, k, t + k]

    def logit_with(frame, codebook):
        changed = codes.clone()
        changed[0, codebook, frame] = (changed[0, codebook, frame] + 1) % 1024
        return model(model.pattern_inputs(changed)[0], ctx, cm)[0, k, t + k]

    assert not torch.allclose(logit_with(t, 0), ref)  # its own coarse code is seen
    assert not torch.allclose(logit_with(t + k - 1, 0), ref)  # k - 1 frames of coarse lookahead
    assert torch.equal(logit_with(t + k, 0), ref)  # no further
    assert torch.equal(logit_with(t, k), ref)  # never its own target
    assert torch.equal(logit_with(t, 3), ref) and torch.equal(logit_with(t + 1, 1), ref)  # nor later fine codes


def test_second_stage_sampling_keeps_coarse_and_prompt_is_seeded_and_cached_equals_full():
    from halm.generate import complete_codebooks

    model = fine()
    coarse = torch.randint(0, 1024, (2, 40))
    a = complete_codebooks(model, coarse, seed=5)
    assert a.shape == (2, 4, 40) and torch.equal(a[:, 0], coarse) and a.max() < 1024
    assert torch.equal(a, complete_codebooks(model, coarse, seed=5))
    assert torch.equal(a, complete_codebooks(model, coarse, seed=5, use_cache=False))
    assert not torch.equal(a, complete_codebooks(model, coarse, seed=6))
    prompt = torch.randint(0, 1024, (2, 4, 10))
    p = complete_codebooks(model, torch.cat([prompt[:, 0], coarse[:, 10:]], 1), prompt=prompt, seed=5)
    assert torch.equal(p[:, :, :10], prompt) and torch.equal(p[:, 0, 10:], coarse[:, 10:])
    long = complete_codebooks(model, torch.randint(0, 1024, (1, 200)), seed=1)  # past the 125-frame context
    assert long.shape == (1, 4, 200)
    with pytest.raises(ValueError, match="given"):
        generate_t2a(model, *text(2, D=model.cfg.text_dim), 40)
    with pytest.raises(ValueError, match="given_codebooks=1"):
        complete_codebooks(tiny(), coarse)


def test_second_stage_settings_are_checked():
    with pytest.raises(ValueError, match="given_codebooks"):
        preset_config("tiny-fine", ["given_codebooks=4"])
    with pytest.raises(ValueError, match="rr_weight=0"):
        preset_config("tiny-fine", ["rr_weight=3.0"])


def test_mel_variant_starts_as_the_model_without_mel_and_mel_zero_ignores_the_mel():
    over = {"mel": True, "n_mels": 8, "mel_d": 16, "mel_heads": 2, "mel_layers": 1}
    codes = torch.randint(0, 1024, (2, 4, 20))
    emb, mask = text(2)
    mel = torch.randn(2, 20, 2, 8)

    def logits(model, m):
        inputs, _, _ = model.pattern_inputs(codes)
        return model(inputs, *model.condition(emb, mask), model.step_mel(m, 20))

    model = tiny(**over)  # identity fusion: at init the mel changes nothing
    torch.testing.assert_close(logits(model, mel), logits(model, torch.randn_like(mel)), atol=0, rtol=0)
    with torch.no_grad():
        model.fuse.weight.normal_()  # once the fusion has learned, the mel counts ...
    assert not torch.allclose(logits(model, mel), logits(model, torch.randn_like(mel)))
    zeroed = tiny(**over, mel_zero=True)  # ... unless it is zeroed (the ablation)
    with torch.no_grad():
        zeroed.fuse.weight.normal_()
    torch.testing.assert_close(logits(zeroed, mel), logits(zeroed, torch.randn_like(mel)), atol=0, rtol=0)
    assert not torch.equal(tiny(**over, fuse_init="random").fuse.weight, tiny(**over).fuse.weight)


def test_t2a_sampler_keeps_to_the_codebook_when_the_vocab_is_larger():
    model = tiny()
    V = model.cfg.vocab_size
    emb, mask = text(2)
    with torch.no_grad():
        for head in model.heads:
            head.weight[V // 2:] += 5 * head.weight[V // 2:].sign()
    free = generate_t2a(model, emb, mask, 12, cfg_coef=3.0, seed=1)
    assert int((free >= V // 2).sum()) > free.numel() // 2
    kept = generate_t2a(model, emb, mask, 12, cfg_coef=3.0, seed=1, n_codes=V // 2)
    assert int(kept.max()) < V // 2
    assert torch.equal(free, generate_t2a(model, emb, mask, 12, cfg_coef=3.0, seed=1, n_codes=V))
