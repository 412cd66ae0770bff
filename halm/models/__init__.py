"""Model families and named presets.

A run is `preset + overrides`: `halm train --preset gpt-s --set n_layer=6`. The family's config
dataclass is saved in the run's config.json, so a checkpoint never depends on the command line.
"""

from __future__ import annotations

import dataclasses

import torch

from halm.config import apply_overrides
from halm.errors import UserError
from halm.models.gpt import GPT, GPTConfig
from halm.models.layers import count_params
from halm.models.t2a import T2A, T2AConfig
from halm.models.whisper_gpt import WhisperGPT, WhisperGPTConfig

FAMILIES = {"gpt": (GPTConfig, GPT), "whisper_gpt": (WhisperGPTConfig, WhisperGPT), "t2a": (T2AConfig, T2A)}

# Sizes of the Whisper-GPT paper (vocab 1024, context 512): GPT-S 3.7M, GPT-L 40M (about 10x), hybrid 4.0M
# = the GPT-S core + a ~0.3M mel path. tests/test_models.py checks each count within 3%.
PRESETS: dict[str, tuple[str, dict, str]] = {
    "gpt-s": ("gpt", dict(n_layer=4, n_head=4, d_model=252), "token-only baseline GPT-S (paper: 3.7M)"),
    "gpt-l": ("gpt", dict(n_layer=8, n_head=8, d_model=632), "token-only baseline GPT-L, ~10x GPT-S (paper: 40M)"),
    "whisper-gpt": ("whisper_gpt", dict(n_layer=4, n_head=4, d_model=252, d_token=252, mel_d=80, mel_layers=2, mel_heads=4),
                    "hybrid: GPT-S core + causal mel path (paper: 4.0M)"),
    "whisper-gpt-nomel": ("whisper_gpt", dict(n_layer=4, n_head=4, d_model=252, d_token=252, mel_d=80, mel_layers=2,
                                              mel_heads=4, mel_zero=True),
                          "ablation: the hybrid with its mel input zeroed"),
    "tiny-gpt": ("gpt", dict(context=128, n_layer=2, n_head=2, d_model=64), "test/demo size token-only GPT"),
    "tiny-gpt-l": ("gpt", dict(context=128, n_layer=4, n_head=4, d_model=192), "test/demo size, ~10x tiny-gpt"),
    "tiny-whisper-gpt": ("whisper_gpt", dict(context=128, n_layer=2, n_head=2, d_model=64, d_token=64, mel_d=32,
                                             mel_layers=1, mel_heads=2), "test/demo size hybrid"),
    # Text-to-audio (4 codebooks, delay pattern, MiniLM text, CFG + RR). The RR paper's LM is 300M (t2a-l).
    "t2a-s": ("t2a", dict(n_layer=4, n_head=4, d_model=192), "text-to-audio LM for CPU experiments (~4M)"),
    "t2a-m": ("t2a", dict(n_layer=8, n_head=8, d_model=512), "text-to-audio LM, ~10x t2a-s (~40M)"),
    "t2a-l": ("t2a", dict(n_layer=17, n_head=16, d_model=1024, context=1024),
              "text-to-audio LM at the RR paper's scale (~300M; for GPUs)"),
    "tiny-t2a": ("t2a", dict(context=128, n_layer=2, n_head=2, d_model=64), "test/demo size text-to-audio LM"),
    # The second stage of a coarse-token LM (gpt / whisper_gpt continuations): codebooks 1..7 from codebook 0,
    # no text (`halm generate --full RUN`).
    "fine-s": ("t2a", dict(n_q=8, given_codebooks=1, text_encoder="none", rr_weight=0.0, cfg_dropout=0.0, n_layer=4,
                           n_head=4, d_model=192), "second stage: codebooks 1..7 given codebook 0, no text (~5.5M)"),
    "tiny-fine": ("t2a", dict(n_q=4, given_codebooks=1, text_encoder="none", rr_weight=0.0, cfg_dropout=0.0, context=128,
                              n_layer=2, n_head=2, d_model=64), "test/demo size second stage"),
}
PAPER_PARAMS = {"gpt-s": 3.7e6, "gpt-l": 40e6, "whisper-gpt": 4.0e6, "whisper-gpt-nomel": 4.0e6, "t2a-l": 300e6}


def preset_config(name: str, overrides: list[str] | None = None):
    """(family, config dataclass) of a named preset with `key=value` overrides applied."""
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    family, fields, _ = PRESETS[name]
    cfg_cls, _ = FAMILIES[family]
    return family, apply_overrides(cfg_cls(**fields), overrides or [])


def config_from_dict(family: str, d: dict):
    if family not in FAMILIES:
        raise UserError(f"unknown model family {family!r}; known: {', '.join(FAMILIES)}")
    cfg_cls, _ = FAMILIES[family]
    names = {f.name for f in dataclasses.fields(cfg_cls)}
    unknown = set(d) - names
    if unknown:
        raise UserError(f"config for {family} has unknown fields {sorted(unknown)} (made by a newer halm?)")
    defaults = {f.name: f.default for f in dataclasses.fields(cfg_cls) if f.default is not dataclasses.MISSING}
    for k, v in d.items():
        want = type(defaults.get(k))
        if want in (int, float, bool, str) and defaults[k] is not None:
            ok = isinstance(v, want) and not (want is int and isinstance(v, bool))
            ok = ok or (want is float and isinstance(v, int) and not isinstance(v, bool))
            if not ok:
                raise UserError(f"{k}: expected {want.__name__}, got {v!r}")
        if k in _POSITIVE and isinstance(v, int) and v < 1:
            raise UserError(f"{k} must be >= 1, got {v}")
    return cfg_cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


_POSITIVE = {"n_layer", "n_head", "d_model", "d_token", "context", "vocab_size", "n_q"}


def build_model(family: str, cfg):
    _, model_cls = FAMILIES[family]
    return model_cls(cfg)


def list_presets() -> list[dict]:
    rows = []
    for name, (family, _, about) in PRESETS.items():
        _, cfg = preset_config(name)
        with torch.device("meta"):  # count without allocating (t2a-l has 300M parameters)
            n = count_params(build_model(family, cfg))
        rows.append({"preset": name, "family": family, "params": n,
                     "paper_params": PAPER_PARAMS.get(name), "about": about, "config": cfg.to_dict()})
    return rows


def model_from_config(rc: dict, where: str):
    """Build the run's model, or DamagedFile naming config.json when its model settings are nonsense."""
    from halm.checkpoint import DamagedFile

    try:
        cfg = config_from_dict(rc["family"], rc["model"])
        return build_model(rc["family"], cfg)
    except (TypeError, ValueError, RuntimeError) as e:
        raise DamagedFile(f"{where}/config.json: bad model settings ({e}); restore the file") from None


__all__ = ["FAMILIES", "PRESETS", "GPT", "GPTConfig", "T2A", "T2AConfig", "WhisperGPT", "WhisperGPTConfig", "build_model",
           "config_from_dict", "count_params", "list_presets", "model_from_config", "preset_config"]
