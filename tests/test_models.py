"""Model invariants: paper sizes, KV cache = full forward, causality of the mel path, GPT-2 reference."""

import pytest
import torch

from halm.models import PAPER_PARAMS, build_model, count_params, preset_config


@pytest.mark.parametrize("name", sorted(PAPER_PARAMS))
def test_paper_presets_match_the_paper_sizes(name):
    family, cfg = preset_config(name)
    with torch.device("meta"):  # count without allocating (t2a-l: 300M)
        n = count_params(build_model(family, cfg))
    assert abs(n / PAPER_PARAMS[name] - 1) <= 0.03, (name, n)


def test_hybrid_is_gpt_s_core_plus_mel_path():
    _, s = preset_config("gpt-s")
    _, h = preset_config("whisper-gpt")
    assert (h.n_layer, h.n_head, h.d_model, h.context, h.vocab_size) == (s.n_layer, s.n_head, s.d_model, s.context, s.vocab_size)
    hybrid = build_model("whisper_gpt", h)
    mel_path = sum(p.numel() for n, p in hybrid.named_parameters() if n.startswith(("mel_", "fuse")))
    assert 0.2e6 < mel_path < 0.4e6


def _inputs(B=2, T=40, V=1024, r=2, M=80, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, V, (B, T), generator=g), torch.randn(B, T, r, M, generator=g)


@pytest.mark.parametrize("batch", [1, 2])  # batch 1 takes the matrix-vector path of CausalStack.step
@pytest.mark.parametrize("preset", ["tiny-gpt", "tiny-whisper-gpt"])
def test_cached_step_by_step_logits_equal_full_forward(preset, batch):
    torch.manual_seed(0)
    family, cfg = preset_config(preset, ["fuse_init=random"] if "whisper" in preset else [])  # the mel matters from step 0
    model = build_model(family, cfg).eval()
    tokens, mel = _inputs(B=batch)
    mel = mel if model.uses_mel else None
    with torch.no_grad():
        full = model(tokens, mel)
        cache = model.new_cache(batch)
        steps = [model(tokens[:, :7], mel[:, :7] if mel is not None else None, cache)]  # a prefill of 7 ...
        for t in range(7, 40):  # ... then one step at a time
            steps.append(model(tokens[:, t:t + 1], mel[:, t:t + 1] if mel is not None else None, cache))
        cached = torch.cat(steps, dim=1)
    assert cache.pos == 40
    torch.testing.assert_close(cached, full, atol=1e-5, rtol=0)


def test_hybrid_logits_never_see_future_mel_or_tokens():
    torch.manual_seed(0)
    model = build_model(*preset_config("tiny-whisper-gpt", ["fuse_init=random"])).eval()
    tokens, mel = _inputs(B=1, T=30)
    t2, m2 = tokens.clone(), mel.clone()
    t2[:, 20:] = (t2[:, 20:] + 1) % 1024
    m2[:, 20:] += 5.0
    with torch.no_grad():
        a, b = model(tokens, mel), model(t2, m2)
    torch.testing.assert_close(a[:, :20], b[:, :20], atol=0, rtol=0)
    assert (a[:, 20:] - b[:, 20:]).abs().max() > 1e-3  # and it does use the mel / tokens at t >= 20
    with torch.no_grad():
        assert (model(tokens, m2)[:, 20:] - a[:, 20:]).abs().max() > 1e-3  # the mel alone changes them


def test_identity_fusion_starts_as_the_token_gpt_and_learns_the_mel():
    torch.manual_seed(0)
    _, cfg = preset_config("tiny-whisper-gpt")
    assert cfg.fuse_init == "identity"
    hybrid = build_model("whisper_gpt", cfg)
    gpt = build_model(*preset_config("tiny-gpt", [f"d_model={cfg.d_model}", f"n_layer={cfg.n_layer}",
                                                  f"n_head={cfg.n_head}", f"context={cfg.context}"]))
    gpt.load_state_dict({k: v for k, v in hybrid.state_dict().items() if k.startswith(("wte", "stack", "head"))})
    tokens, mel = _inputs(B=2, T=30, r=cfg.frames_per_token, M=cfg.n_mels)
    torch.testing.assert_close(hybrid(tokens, mel), gpt(tokens), atol=1e-6, rtol=0)
    loss, _ = hybrid.loss({"tokens": tokens, "mel": mel})
    loss.backward()
    assert hybrid.fuse.weight.grad[:, cfg.d_token:].abs().max() > 0  # the mel part of the fusion learns from step 0

def test_mel_zero_ablation_ignores_the_mel():
    torch.manual_seed(0)
    family, cfg = preset_config("tiny-whisper-gpt", ["mel_zero=true", "fuse_init=random"])
    model = build_model(family, cfg).eval()
    tokens, mel = _inputs(B=1, T=16)
    with torch.no_grad():
        torch.testing.assert_close(model(tokens, mel), model(tokens, torch.randn_like(mel)), atol=0, rtol=0)


def test_gpt_matches_transformers_gpt2_with_the_same_weights():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    family, cfg = preset_config("tiny-gpt")
    ours = build_model(family, cfg).eval()
    ref = GPT2LMHeadModel(GPT2Config(vocab_size=cfg.vocab_size, n_positions=cfg.context, n_embd=cfg.d_model,
                                     n_layer=cfg.n_layer, n_head=cfg.n_head, activation_function="gelu_new",
                                     resid_pdrop=0, embd_pdrop=0, attn_pdrop=0, tie_word_embeddings=False)).eval()
    sd = {"transformer.wte.weight": ours.wte.weight, "transformer.wpe.weight": ours.stack.wpe.weight,
          "transformer.ln_f.weight": ours.stack.ln_f.weight, "transformer.ln_f.bias": ours.stack.ln_f.bias,
          "lm_head.weight": ours.head.weight}
    for i, blk in enumerate(ours.stack.blocks):
        p = f"transformer.h.{i}."
        sd |= {p + "ln_1.weight": blk.ln_1.weight, p + "ln_1.bias": blk.ln_1.bias,
               p + "ln_2.weight": blk.ln_2.weight, p + "ln_2.bias": blk.ln_2.bias,
               # GPT-2's Conv1D stores (in, out): the transpose of nn.Linear's (out, in)
               p + "attn.c_attn.weight": blk.attn.qkv.weight.T, p + "attn.c_attn.bias": blk.attn.qkv.bias,
               p + "attn.c_proj.weight": blk.attn.proj.weight.T, p + "attn.c_proj.bias": blk.attn.proj.bias,
               p + "mlp.c_fc.weight": blk.mlp.fc.weight.T, p + "mlp.c_fc.bias": blk.mlp.fc.bias,
               p + "mlp.c_proj.weight": blk.mlp.proj.weight.T, p + "mlp.c_proj.bias": blk.mlp.proj.bias}
    missing, unexpected = ref.load_state_dict({k: v.detach().clone() for k, v in sd.items()}, strict=False)
    assert not unexpected and all(".attn.bias" in k or "masked_bias" in k for k in missing)
    tokens, _ = _inputs(B=2, T=50)
    with torch.no_grad():
        torch.testing.assert_close(ours(tokens), ref(tokens).logits, atol=1e-5, rtol=1e-5)


def test_overrides_and_bad_configs():
    _, cfg = preset_config("gpt-s", ["n_layer=6", "context=256"])
    assert cfg.n_layer == 6 and cfg.context == 256
    with pytest.raises(ValueError, match="unknown setting"):
        preset_config("gpt-s", ["n_layers=6"])
    with pytest.raises(ValueError, match="divisible"):
        preset_config("gpt-s", ["n_head=5"])
    with pytest.raises(ValueError, match="unknown preset"):
        preset_config("gpt-xl")
    model = build_model(*preset_config("tiny-gpt"))
    with pytest.raises(ValueError, match="exceed the model's context"):
        model(torch.zeros(1, 129, dtype=torch.long))
