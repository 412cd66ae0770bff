"""Checkpoints in and out of transformers' formats (local folders only; nothing is downloaded).

    halm import musicgen DIR --out RUN     # MusicgenForConditionalGeneration (save_pretrained layout) -> t2a run
    halm export RUN --format transformers --out DIR   # gpt -> GPT2LMHeadModel, MusicGen-shaped t2a -> MusicGen

An imported run is an ordinary t2a run folder: config.json (the t2a family with MusicGen's switches:
sinusoidal positions, bias-free projections, exact GELU, its MLP width, the delay pattern, its start token
= the codebook size), checkpoint/model.safetensors (weights only; "imported" in config.json), text_encoder/
(its T5 encoder and tokenizer; the run's `text_encoder` is `t5:RUN/text_encoder`) and codec/ (its EnCodec,
loadable by `Codec.load(RUN/codec)`; `halm prepare --codec RUN/codec` tokenizes data for fine-tuning with
`halm train --init-from RUN`). The null condition of CFG is MusicGen's: a zero vector, which through
bias-free cross-attention adds nothing, as transformers' zeroed, fully masked text does.

Weight names (halm <- transformers, decoder i-th layer `L = decoder.model.decoder.layers.i`):
  emb.k <- embed_tokens.k; stack.blocks.i.attn.qkv <- [L.self_attn.q_proj; k_proj; v_proj]; attn.proj <- out_proj;
  cross.q <- L.encoder_attn.q_proj; cross.kv <- [k_proj; v_proj]; cross.proj <- out_proj; ln_1 / ln_cross / ln_2 <-
  self_attn_layer_norm / encoder_attn_layer_norm / final_layer_norm; mlp.fc / mlp.proj <- fc1 / fc2; stack.ln_f <-
  decoder.layer_norm; heads.k <- decoder.lm_heads.k; text_proj <- enc_to_dec_proj (identity when MusicGen has none).
tests/test_interop.py checks that the imported model's logits equal transformers' and that import -> export
gives back the decoder's weights bit for bit.
"""

from __future__ import annotations

import contextlib
import json
import os
from datetime import date
from pathlib import Path

import torch

from halm.errors import UserError

_ACT_FROM_HF = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu"}
_ACT_TO_HF = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu"}
_HOW_TO = ("halm never downloads models. On a machine with internet:\n"
           "  python -c \"from transformers import MusicgenForConditionalGeneration as M, AutoProcessor as P; "
           "n='facebook/musicgen-small'; M.from_pretrained(n).save_pretrained('musicgen-small'); "
           "P.from_pretrained(n).save_pretrained('musicgen-small')\"\n"
           "then copy the folder here.")


@contextlib.contextmanager
def _quiet_transformers():
    """transformers' warnings and progress bars off inside the block (e.g. MusicGen's start token = vocab_size, which
    transformers flags as outside the vocabulary: it is MusicGen's own convention), restored after."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _decoder_pairs(n_layer: int, n_q: int) -> list[tuple[str, tuple[str, ...]]]:
    """(halm key, transformers keys concatenated along dim 0) for every decoder tensor."""
    D = "decoder.model.decoder"
    pairs = [(f"emb.{k}.weight", (f"{D}.embed_tokens.{k}.weight",)) for k in range(n_q)]
    for i in range(n_layer):
        L, B = f"{D}.layers.{i}", f"stack.blocks.{i}"
        pairs += [(f"{B}.attn.qkv.weight", tuple(f"{L}.self_attn.{p}_proj.weight" for p in "qkv")),
                  (f"{B}.attn.proj.weight", (f"{L}.self_attn.out_proj.weight",)),
                  (f"{B}.cross.q.weight", (f"{L}.encoder_attn.q_proj.weight",)),
                  (f"{B}.cross.kv.weight", tuple(f"{L}.encoder_attn.{p}_proj.weight" for p in "kv")),
                  (f"{B}.cross.proj.weight", (f"{L}.encoder_attn.out_proj.weight",)),
                  (f"{B}.mlp.fc.weight", (f"{L}.fc1.weight",)), (f"{B}.mlp.proj.weight", (f"{L}.fc2.weight",))]
        for ours, theirs in (("ln_1", "self_attn_layer_norm"), ("ln_cross", "encoder_attn_layer_norm"),
                             ("ln_2", "final_layer_norm")):
            pairs += [(f"{B}.{ours}.{p}", (f"{L}.{theirs}.{p}",)) for p in ("weight", "bias")]
    pairs += [(f"stack.ln_f.{p}", (f"{D}.layer_norm.{p}",)) for p in ("weight", "bias")]
    pairs += [(f"heads.{k}.weight", (f"decoder.lm_heads.{k}.weight",)) for k in range(n_q)]
    return pairs


def t2a_config_of_musicgen(hf_config, text_encoder: str):
    """The halm T2AConfig equal to a MusicgenConfig's decoder; UserError for what halm cannot represent."""
    from halm.models.t2a import T2AConfig

    d = hf_config.decoder
    if int(getattr(d, "audio_channels", 1)) != 1:
        raise UserError("stereo MusicGen (audio_channels=2, interleaved codebooks) is not supported; use a mono model")
    if d.activation_function not in _ACT_FROM_HF:
        raise UserError(f"MusicGen activation {d.activation_function!r} has no halm equivalent ({sorted(_ACT_FROM_HF)})")
    special = d.vocab_size  # halm's start token and empty pattern positions
    for name in ("pad_token_id", "bos_token_id"):
        if getattr(d, name, special) not in (None, special):
            raise UserError(f"MusicGen decoder {name}={getattr(d, name)}; halm needs it equal to vocab_size ({special})")
    text_dim = int(getattr(hf_config.text_encoder, "d_model", None) or hf_config.text_encoder.hidden_size)
    if text_dim != d.hidden_size and d.cross_attention_hidden_size is not None:
        raise UserError("MusicGen with cross_attention_hidden_size set and no text projection is not supported")
    return T2AConfig(n_q=d.num_codebooks, vocab_size=d.vocab_size, context=d.max_position_embeddings,
                     n_layer=d.num_hidden_layers, n_head=d.num_attention_heads, d_model=d.hidden_size,
                     dropout=0.0, positions="sinusoidal", bias=False, d_ff=d.ffn_dim,
                     activation=_ACT_FROM_HF[d.activation_function], pattern="delay", text_encoder=text_encoder,
                     text_dim=text_dim, text_max_tokens=512, rr_weight=0.0)


def state_from_musicgen(hf_state: dict, cfg) -> dict:
    """halm T2A state dict of a MusicgenForConditionalGeneration state dict (decoder + text projection)."""
    out = {ours: torch.cat([hf_state[t] for t in theirs], 0) for ours, theirs in _decoder_pairs(cfg.n_layer, cfg.n_q)}
    if "enc_to_dec_proj.weight" in hf_state:
        out["text_proj.weight"], out["text_proj.bias"] = hf_state["enc_to_dec_proj.weight"], hf_state["enc_to_dec_proj.bias"]
    else:  # MusicGen feeds the text encoder's states straight to the cross-attention
        out["text_proj.weight"], out["text_proj.bias"] = torch.eye(cfg.d_model), torch.zeros(cfg.d_model)
    out["null_cond"] = torch.zeros(cfg.d_model)  # MusicGen's null condition: zeros, adding nothing
    return {k: v.detach().clone().contiguous() for k, v in out.items()}


def import_musicgen(src: str | os.PathLike, out: str | os.PathLike, tokenizer: str | os.PathLike | None = None) -> dict:
    """A MusicgenForConditionalGeneration folder -> a halm t2a run folder `out`; returns a summary dict."""
    src, out = Path(src).expanduser(), Path(out).expanduser().resolve()
    if not (src / "config.json").exists():
        raise UserError(f"{src}: not a MusicGen folder (no config.json). " + _HOW_TO)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"--out {out}: the folder exists and is not empty; choose a new one")
    with _quiet_transformers():
        return _import_musicgen(src, out, tokenizer)


def _import_musicgen(src: Path, out: Path, tokenizer) -> dict:
    from transformers import AutoTokenizer, MusicgenConfig, MusicgenForConditionalGeneration

    from halm import __version__
    from halm.checkpoint import atomic_write_text, save_weights, write_checkpoint_dir
    from halm.codec.model import Codec
    from halm.models import build_model, count_params
    from halm.train import TrainConfig

    hf_config = MusicgenConfig.from_pretrained(str(src))
    if hf_config.model_type != "musicgen":
        raise UserError(f"{src}: config.json is a {hf_config.model_type!r} model, not musicgen")
    if getattr(hf_config.text_encoder, "model_type", None) != "t5":
        raise UserError(f"{src}: the text encoder is {hf_config.text_encoder.model_type!r}; halm imports T5 text encoders")
    tok_dir = Path(tokenizer).expanduser() if tokenizer else src
    try:
        tok = AutoTokenizer.from_pretrained(str(tok_dir), local_files_only=True)
    except (OSError, ValueError) as e:
        raise UserError(f"{tok_dir}: no tokenizer files (MusicGen's processor saves them next to the model; "
                        f"or pass --tokenizer DIR). " + _HOW_TO) from e
    hf = MusicgenForConditionalGeneration.from_pretrained(str(src), local_files_only=True).eval()
    cfg = t2a_config_of_musicgen(hf.config, f"t5:{out / 'text_encoder'}")
    state = state_from_musicgen(hf.state_dict(), cfg)
    model = build_model("t2a", cfg)
    model.load_state_dict(state)  # strict: every tensor mapped

    out.mkdir(parents=True, exist_ok=True)
    hf.text_encoder.save_pretrained(str(out / "text_encoder"))
    tok.save_pretrained(str(out / "text_encoder"))
    hf.audio_encoder.save_pretrained(str(out / "codec"))
    codec = Codec.load(out / "codec", n_codebooks=cfg.n_q)
    info = codec.info()
    write_checkpoint_dir(out / "checkpoint",
                         lambda d: save_weights(state, d / "model.safetensors", metadata={"format": "pt"}))
    run_config = {"halm_version": __version__, "preset": "musicgen", "family": "t2a", "model": cfg.to_dict(),
                  "train": TrainConfig(steps=0).to_dict(),
                  "data": {"path": None, "codec": {**info.__dict__, "name": str(out / "codec")}, "mel": None,
                           "mel_source": "audio", "frame_rate": info.frame_rate},
                  "imported": {"format": "musicgen", "from": str(src.resolve()), "date": date.today().isoformat(),
                               "transformers_class": type(hf).__name__}}
    atomic_write_text(out / "config.json", json.dumps(run_config, indent=2) + "\n")
    return {"run": str(out), "params": count_params(model), "codebooks": cfg.n_q, "codebook_size": cfg.vocab_size,
            "sample_rate": info.sample_rate, "frame_rate": info.frame_rate, "codec_sha256": info.weights_sha256}


# ---- export -------------------------------------------------------------------------------------------
def _musicgen_blockers(cfg) -> list[str]:
    want = {"positions": "sinusoidal", "bias": False, "pattern": "delay", "given_codebooks": 0, "mel": False}
    out = [f"{k}={getattr(cfg, k)!r} (MusicGen: {v!r})" for k, v in want.items() if getattr(cfg, k) != v]
    if not cfg.text_encoder.startswith("t5:"):
        out.append(f"text_encoder={cfg.text_encoder!r} (MusicGen: a T5 encoder folder, t5:DIR)")
    return out


def export_run(run: str | os.PathLike, out: str | os.PathLike, fmt: str = "transformers", weights: str = "auto") -> dict:
    """A run -> a folder transformers loads: gpt -> GPT2LMHeadModel; a MusicGen-shaped t2a (e.g. an imported
    MusicGen, fine-tuned or not) -> MusicgenForConditionalGeneration with its T5 encoder and EnCodec."""
    from halm.runs import load_run

    if fmt != "transformers":
        raise UserError(f"--format {fmt!r}: halm exports to 'transformers' only")
    out = Path(out).expanduser()
    if out.exists() and any(out.iterdir()):
        raise UserError(f"--out {out}: the folder exists and is not empty; choose a new one")
    model, rc = load_run(run, weights=weights)
    if rc["family"] not in ("gpt", "t2a") or (rc["family"] == "t2a" and _musicgen_blockers(model.cfg)):
        why = "; ".join(_musicgen_blockers(model.cfg)) if rc["family"] == "t2a" else \
            "the hybrid's mel path has no transformers counterpart"
        raise UserError(f"{run}: a {rc['family']} model is not representable in transformers' formats ({why}); "
                        "gpt runs export as GPT2LMHeadModel, MusicGen-shaped t2a runs as MusicGen")
    with _quiet_transformers():
        hf = _gpt2_of(model) if rc["family"] == "gpt" else _musicgen_of(model, rc)
        out.mkdir(parents=True, exist_ok=True)
        hf.save_pretrained(str(out))
        if rc["family"] == "t2a":  # the tokenizer travels with the model, as MusicGen's processor keeps it
            from transformers import AutoTokenizer

            AutoTokenizer.from_pretrained(model.cfg.text_encoder[3:], local_files_only=True).save_pretrained(str(out))
    return {"out": str(out), "class": type(hf).__name__, "family": rc["family"]}


def gpt2_state(model) -> dict:
    """GPT2LMHeadModel state dict of a halm gpt (transformers' Conv1D stores (in, out): weights transposed)."""
    sd = {"transformer.wte.weight": model.wte.weight, "transformer.wpe.weight": model.stack.wpe.weight,
          "transformer.ln_f.weight": model.stack.ln_f.weight, "transformer.ln_f.bias": model.stack.ln_f.bias,
          "lm_head.weight": model.head.weight}
    for i, b in enumerate(model.stack.blocks):
        p = f"transformer.h.{i}"
        for ours, theirs in ((b.ln_1, "ln_1"), (b.ln_2, "ln_2")):
            sd[f"{p}.{theirs}.weight"], sd[f"{p}.{theirs}.bias"] = ours.weight, ours.bias
        for ours, theirs in ((b.attn.qkv, "attn.c_attn"), (b.attn.proj, "attn.c_proj"), (b.mlp.fc, "mlp.c_fc"),
                             (b.mlp.proj, "mlp.c_proj")):
            sd[f"{p}.{theirs}.weight"], sd[f"{p}.{theirs}.bias"] = ours.weight.T, ours.bias
    return {k: v.detach().clone().contiguous() for k, v in sd.items()}


def _gpt2_of(model):
    from transformers import GPT2Config, GPT2LMHeadModel

    c = model.cfg
    hf = GPT2LMHeadModel(GPT2Config(vocab_size=c.vocab_size, n_positions=c.context, n_embd=c.d_model,
                                    n_layer=c.n_layer, n_head=c.n_head, activation_function="gelu_new",
                                    resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=False,
                                    bos_token_id=None, eos_token_id=None))
    hf.load_state_dict(gpt2_state(model), strict=False)  # strict=False: GPT-2's causal-mask buffers are not weights
    missing = [k for k in hf.state_dict() if k not in gpt2_state(model) and not k.endswith(("attn.bias", "masked_bias"))]
    if missing:
        raise RuntimeError(f"GPT-2 export left weights unset: {missing[:3]}")
    return hf.eval()


def _musicgen_of(model, rc: dict):
    from transformers import (
        EncodecModel,
        MusicgenConfig,
        MusicgenDecoderConfig,
        MusicgenForConditionalGeneration,
        T5EncoderModel,
    )

    from halm.codec.model import Codec

    c = model.cfg
    text = T5EncoderModel.from_pretrained(c.text_encoder[3:], local_files_only=True)
    codec = Codec.load(rc["data"]["codec"]["name"])
    if codec.info().weights_sha256 != rc["data"]["codec"]["weights_sha256"]:
        raise UserError(f"codec {codec.name} is not the one the run was trained with")
    if not isinstance(codec.model, EncodecModel) or hasattr(codec.model, "harmonic") or \
            getattr(codec.model.config, "decoder_activation", "elu") != "elu":
        raise UserError(f"codec {codec.name} is a halm codec (Snake decoder / harmonic branch): transformers' "
                        "MusicGen cannot decode it")
    dec = MusicgenDecoderConfig(vocab_size=c.vocab_size, max_position_embeddings=c.context, num_hidden_layers=c.n_layer,
                                ffn_dim=c.d_ff or 4 * c.d_model, num_attention_heads=c.n_head, hidden_size=c.d_model,
                                num_codebooks=c.n_q, activation_function=_ACT_TO_HF[c.activation], dropout=0.0,
                                attention_dropout=0.0, activation_dropout=0.0, pad_token_id=c.vocab_size,
                                bos_token_id=c.vocab_size, audio_channels=1)
    cfg = MusicgenConfig(text_encoder=text.config, audio_encoder=codec.model.config, decoder=dec)
    hf = MusicgenForConditionalGeneration(cfg, text_encoder=text, audio_encoder=codec.model)
    ours = model.state_dict()
    state = {}
    for name, theirs in _decoder_pairs(c.n_layer, c.n_q):
        for key, part in zip(theirs, ours[name].chunk(len(theirs), 0)):
            state[key] = part
    if hasattr(hf, "enc_to_dec_proj"):
        state["enc_to_dec_proj.weight"], state["enc_to_dec_proj.bias"] = ours["text_proj.weight"], ours["text_proj.bias"]
    elif not (torch.equal(ours["text_proj.weight"], torch.eye(c.d_model)) and not ours["text_proj.bias"].any()):
        raise UserError("the text projection is no longer the identity, and MusicGen has none when the text width "
                        "equals the decoder's: not representable")
    if ours["null_cond"].any():
        print("halm export: note: the run's learned null condition is not zero; transformers' MusicGen uses zeros "
              "for CFG, so its guided samples will differ from halm's", flush=True)
    missing, unexpected = hf.load_state_dict({k: v.detach().clone() for k, v in state.items()}, strict=False)
    missing = [k for k in missing if k.startswith(("decoder.", "enc_to_dec_proj"))]
    if missing or unexpected:
        raise RuntimeError(f"MusicGen export: missing {missing[:3]}, unexpected {unexpected[:3]}")
    hf.generation_config.decoder_start_token_id = c.vocab_size
    hf.generation_config.pad_token_id = c.vocab_size
    return hf.eval()
