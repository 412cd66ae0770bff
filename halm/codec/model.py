"""The neural codec: one backend, transformers' `EncodecModel`.

    codec = Codec.load("halm-small")              # the codec shipped inside halm (default)
    codec = Codec.load("/ckpt/encodec_24khz")     # a local folder with config.json + weights
    codec = Codec.load("~/.cache/torch/hub/checkpoints/encodec_24khz-d7cc33bc.th")  # original file
    codes = codec.encode(wav, sample_rate)        # (B, C, N) -> (B, K, T) int64, T = ceil(N / hop)
    wav = codec.decode(codes[:, :1])              # any K' <= K first codebooks -> (B, C, T * hop)

halm's own codecs may replace the decoder's ELUs by Snake activations (`decoder_activation: "snake"` in
config.json, see `Snake`) and add a harmonic synthesizer driven by a pitch read off the codes
(`harmonics: K` in config.json, see `halm.codec.harmonic`); everything else is transformers' EncodecModel
as is, and official checkpoints load unchanged.

Nothing is downloaded: a hub name (e.g. "facebook/encodec_24khz") is looked up only in the local
Hugging Face cache, and a clear message says how to put the checkpoint on disk otherwise.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from halm.codec.harmonic import HarmonicBranch, decode_latent
from halm.errors import UserError

SHIPPED = {"halm-small": "codec_halm_small"}
DEFAULT_CODEC = "halm-small"
ASSETS = Path(__file__).resolve().parent.parent / "assets"


class CodecError(UserError):
    """A codec that cannot be loaded or used as asked (the message says what to do)."""


@dataclass(frozen=True)
class CodecInfo:
    """What a prepared dataset records so that features from different codecs never mix."""

    name: str
    weights_sha256: str
    sample_rate: int
    channels: int
    hop_length: int
    frame_rate: float
    n_codebooks: int
    codebook_size: int


class Snake(torch.nn.Module):
    """x + sin^2(alpha x) / alpha with alpha learned per channel (Ziyin et al. 2020; the activation of the
    BigVGAN and DAC decoders). halm's codecs may use it in place of the decoder's ELUs: with ELUs, a
    decoder fitted to a single speech clip with the training losses renders the voice as a buzz at the
    codec's 75 Hz frame rate, from a fresh init as well as from a trained codec; with Snake it followed a
    210 Hz voice to 202 Hz within 200 steps, and a 130 Hz voice to 129.6 Hz in 1,200 steps at lr 5e-4; at
    the codec's default lr 1e-3 that fit reached 128 Hz and then blew up, back to 75 Hz
    (benchmarks/codec_pitch_overfit.py, docs/results.md)."""

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = torch.nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, N)
        return x + torch.sin(self.alpha * x).pow(2) / (self.alpha + 1e-9)


def snake_decoder(model):
    """Replace every ELU of the decoder by a Snake over the channels of the convolution it feeds."""

    def channels(m) -> int:
        if hasattr(m, "conv"):
            return m.conv.in_channels
        return channels(next(x for x in m.block if hasattr(x, "conv")))  # a residual block

    def walk(seq):
        for i, m in enumerate(list(seq)):
            if isinstance(m, torch.nn.ELU):
                seq[i] = Snake(channels(seq[i + 1]))
            elif hasattr(m, "block"):
                walk(m.block)

    walk(model.decoder.layers)
    return model


def build_encodec(config):
    """transformers' EncodecModel for `config`, with Snake decoder activations and a harmonic branch
    (`HarmonicBranch`, as `model.harmonic`) where config says so (`decoder_activation`, `harmonics`)."""
    from transformers import EncodecModel

    activation = getattr(config, "decoder_activation", "elu")
    if activation not in ("elu", "snake"):
        raise CodecError(f"unknown decoder_activation {activation!r} in the codec config (elu or snake)")
    model = EncodecModel(config)
    if activation == "snake":
        snake_decoder(model)
    n_harmonics = int(getattr(config, "harmonics", 0) or 0)
    if n_harmonics:
        if config.audio_channels != 1:
            raise CodecError("the harmonic branch is for mono codecs")
        feature_dim = model.decoder.layers[0].conv.out_channels
        model.harmonic = HarmonicBranch(config.hidden_size, feature_dim, n_harmonics,
                                        int(np.prod(config.upsampling_ratios)), int(config.sampling_rate),
                                        envelope=int(getattr(config, "harmonic_envelope", 0) or 0),
                                        decoder_gate=float(getattr(config, "decoder_gate", 0.0) or 0.0))
    return model


def _sha256_of_state(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


# ---- the original facebookresearch/encodec checkpoint layout -> transformers' names ----
def convert_original_state_dict(state: dict[str, torch.Tensor], parametrized: bool = True) -> dict[str, torch.Tensor]:
    """Rename the keys of an original `encodec_24khz-*.th` state dict to transformers' EncodecModel keys."""
    out = {}
    for k, v in state.items():
        n = k.replace("encoder.model.", "encoder.layers.").replace("decoder.model.", "decoder.layers.")
        n = n.replace(".conv.conv.", ".conv.").replace(".convtr.convtr.", ".conv.")
        n = n.replace("quantizer.vq.layers.", "quantizer.layers.").replace("._codebook.", ".codebook.")
        if parametrized:
            n = n.replace(".weight_g", ".parametrizations.weight.original0").replace(".weight_v", ".parametrizations.weight.original1")
        out[n] = v
    return out


def _config_for_original_24khz():
    from transformers import EncodecConfig

    # The published 24 kHz model: 32 filters, ratios 8-5-4-2 (hop 320, 75 Hz), 32 codebooks of 1024, causal.
    return EncodecConfig(
        target_bandwidths=[1.5, 3.0, 6.0, 12.0, 24.0], sampling_rate=24000, audio_channels=1, normalize=False,
        chunk_length_s=None, overlap=None, hidden_size=128, num_filters=32, num_residual_layers=1,
        upsampling_ratios=[8, 5, 4, 2], norm_type="weight_norm", kernel_size=7, last_kernel_size=7,
        residual_kernel_size=3, dilation_growth_rate=2, use_causal_conv=True, pad_mode="reflect", compress=2,
        num_lstm_layers=2, trim_right_ratio=1.0, codebook_size=1024, codebook_dim=128, use_conv_shortcut=True,
    )


def _hub_message(spec: str) -> str:
    return (
        f"codec {spec!r} is not a local folder or file, and halm never downloads (offline). Put the checkpoint on "
        f"disk and pass its path: e.g. on a machine with internet `huggingface-cli download {spec} --local-dir "
        f"/path/encodec` (or copy the folder with config.json and model.safetensors), then `--codec /path/encodec`. "
        f"The original file encodec_24khz-d7cc33bc.th from ~/.cache/torch/hub/checkpoints works too. "
        f"Without either, use the codec shipped with halm: --codec {DEFAULT_CODEC}."
    )


def _reflect_pad1d(hidden_states: torch.Tensor, paddings, mode: str = "zero", value: float = 0.0) -> torch.Tensor:
    """`EncodecConv1d._pad1d` with reflect padding done as flipped slices and one concatenation.

    The same values (and gradients) as `F.pad(..., mode="reflect")`, whose CPU kernel took 15% of the
    encoder's time at one thread (54 pads of ~3.7 ms on an 8 s batch; `benchmarks/prepare_throughput.py
    --profile`, docs/results.md). Inputs shorter than the padding keep transformers' own path.
    """
    left, right = int(paddings[0]), int(paddings[1])
    if mode != "reflect" or hidden_states.shape[-1] <= max(left, right):
        from transformers.models.encodec.modeling_encodec import EncodecConv1d

        return EncodecConv1d._pad1d(hidden_states, (left, right), mode, value)
    parts = [hidden_states[..., 1:left + 1].flip(-1)] if left else []
    parts.append(hidden_states)
    if right:
        parts.append(hidden_states[..., -right - 1:-1].flip(-1))
    return torch.cat(parts, dim=-1) if len(parts) > 1 else hidden_states


def fast_padding(model):
    """Give every EncodecConv1d of `model` the faster reflect padding (the same outputs); returns `model`."""
    from transformers.models.encodec.modeling_encodec import EncodecConv1d

    for module in model.modules():
        if isinstance(module, EncodecConv1d):
            module._pad1d = _reflect_pad1d  # an instance attribute: the forward calls self._pad1d
    return model


class Codec:
    """An EncodecModel with halm's contract: encode (B, C, N) -> (B, K, T), decode (B, K', T) -> (B, C, N')."""

    def __init__(self, model, name: str, n_codebooks: int | None = None):
        self.model = fast_padding(model.eval())
        self.name = name
        cfg = model.config
        if cfg.chunk_length_s is not None or cfg.normalize:
            raise CodecError(f"{name}: chunked/normalised EnCodec models (48 kHz) are not supported; use a 24 kHz or 32 kHz codec")
        self.sample_rate = int(cfg.sampling_rate)
        self.channels = int(cfg.audio_channels)
        self.hop_length = int(np.prod(cfg.upsampling_ratios))
        self.frame_rate = self.sample_rate / self.hop_length
        self.codebook_size = int(cfg.codebook_size)
        self.max_codebooks = len(model.quantizer.layers)
        self.n_codebooks = self.max_codebooks if n_codebooks is None else int(n_codebooks)
        if not 1 <= self.n_codebooks <= self.max_codebooks:
            raise CodecError(f"{name}: n_codebooks must be in 1..{self.max_codebooks}, got {n_codebooks}")
        self._sha = None

    # -- loading ---------------------------------------------------------------------------------
    @classmethod
    def load(cls, spec: str | os.PathLike = DEFAULT_CODEC, n_codebooks: int | None = None, bandwidth: float | None = None,
             device: str | torch.device = "cpu") -> Codec:
        """spec: a shipped name ("halm-small"), a local folder (config.json + weights), an original .th file,
        or a hub name present in the local Hugging Face cache. bandwidth (kbps) selects n_codebooks instead."""
        from transformers import EncodecConfig, EncodecModel

        spec_str = str(spec)
        if spec_str in SHIPPED:
            path = ASSETS / SHIPPED[spec_str]
            if not (path / "config.json").exists():
                raise CodecError(f"the shipped codec {spec_str!r} is missing from {path}; reinstall halm")
            model = _load_folder(path)
        else:
            path = Path(spec_str).expanduser()
            if path.is_dir():
                if not (path / "config.json").exists():
                    raise CodecError(f"{path}: no config.json; a codec folder holds config.json and model.safetensors")
                model = _load_folder(path)
            elif path.is_file():
                if path.suffix not in (".th", ".pt", ".pth"):
                    raise CodecError(f"{path}: expected an original EnCodec .th file or a folder")
                state = torch.load(path, map_location="cpu", weights_only=True)
                state = state.get("state_dict", state) if isinstance(state, dict) else state
                cfg = _config_for_original_24khz() if not (path.parent / "config.json").exists() else \
                    EncodecConfig.from_pretrained(path.parent)
                model = EncodecModel(cfg)
                parametrized = any("parametrizations" in k for k in model.state_dict())
                missing, unexpected = model.load_state_dict(convert_original_state_dict(state, parametrized), strict=False)
                missing = [k for k in missing if not k.endswith(("inited",))]
                if missing or unexpected:
                    raise CodecError(f"{path}: not an EnCodec 24 kHz checkpoint (missing {missing[:3]}, unexpected {unexpected[:3]})")
            else:
                try:
                    model = EncodecModel.from_pretrained(spec_str, local_files_only=True)
                except Exception:  # noqa: BLE001 - any failure means: not available offline
                    raise CodecError(_hub_message(spec_str)) from None
        if bandwidth is not None:
            bits_per_codebook = math.log2(model.config.codebook_size) * model.config.sampling_rate / int(
                np.prod(model.config.upsampling_ratios))
            n_codebooks = int(math.floor(bandwidth * 1000 / bits_per_codebook + 1e-6))
        return cls(model, spec_str, n_codebooks).to(device)

    def to(self, device) -> Codec:
        self.model.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def bits_per_codebook_per_second(self) -> float:
        return math.log2(self.codebook_size) * self.frame_rate

    @property
    def bitrate_kbps(self) -> float:
        return self.n_codebooks * self.bits_per_codebook_per_second / 1000

    def info(self) -> CodecInfo:
        if self._sha is None:
            self._sha = _sha256_of_state(self.model.state_dict())
        return CodecInfo(self.name, self._sha, self.sample_rate, self.channels, self.hop_length, self.frame_rate,
                         self.n_codebooks, self.codebook_size)

    # -- encode / decode ---------------------------------------------------------------------------
    @torch.inference_mode()
    def encode(self, wav: torch.Tensor | np.ndarray, sample_rate: int,
               lengths: list[int] | torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, N) audio at sample_rate -> (B, K, T) int64 codes, T = ceil(N' / hop) at the codec rate.

        lengths: valid samples per item of a padded batch (padding is zeroed; frames past an item's
        own ceil(len / hop) are padding). Audio at another rate is resampled first.
        """
        x = torch.as_tensor(wav, dtype=torch.float32)
        if x.dim() != 3:
            raise CodecError(f"expected audio shaped (B, C, N), got {tuple(x.shape)}")
        if lengths is not None:
            lengths = torch.as_tensor(lengths)
            mask = torch.arange(x.shape[-1])[None, :] < lengths[:, None]  # (B, N)
            x = x * mask[:, None, :]
        if sample_rate != self.sample_rate:
            from halm.audio.io import resample

            x = torch.from_numpy(resample(x.numpy(), sample_rate, self.sample_rate))
        if x.shape[1] != self.channels:
            if self.channels == 1:
                x = x.mean(dim=1, keepdim=True)
            else:
                raise CodecError(f"{self.name} expects {self.channels} channels, got {x.shape[1]}")
        if x.shape[-1] == 0:
            raise CodecError("cannot encode empty audio")
        emb = self.model.encoder(x.to(self.device))  # (B, D, T)
        bandwidth = (self.n_codebooks + 0.5) * self.bits_per_codebook_per_second / 1000  # floor() -> n_codebooks
        codes = self.model.quantizer.encode(emb, bandwidth=bandwidth)  # (K, B, T)
        return codes.transpose(0, 1).long()  # (B, K, T)

    @torch.inference_mode()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, K', T) codes with K' <= K -> (B, C, T * hop) audio at the codec rate."""
        codes = torch.as_tensor(codes)
        if codes.dim() != 3 or codes.shape[1] > self.max_codebooks:
            raise CodecError(f"expected codes shaped (B, K'<= {self.max_codebooks}, T), got {tuple(codes.shape)}")
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.codebook_size):
            raise CodecError(f"codes must be in [0, {self.codebook_size}) for {self.name}")
        emb = self.model.quantizer.decode(codes.transpose(0, 1).to(self.device))  # (B, D, T)
        return decode_latent(self.model, emb)  # (B, C, T * hop)

    def save(self, folder: str | os.PathLike, dtype: torch.dtype = torch.float32) -> Path:
        """Write config.json + model.safetensors (inference weights only), loadable by `Codec.load(folder)`."""
        from halm.checkpoint import save_weights

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().to("cpu").contiguous() for k, v in self.model.state_dict().items()
                 if not k.endswith(("cluster_size", "embed_avg", "inited"))}
        state = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in state.items()}
        tmp = folder / "model.safetensors.tmp"
        save_weights(state, str(tmp), metadata={"format": "pt", "halm": "codec"})
        os.replace(tmp, folder / "model.safetensors")
        (folder / "config.json").write_text(json.dumps(self.model.config.to_dict(), indent=2, default=str) + "\n")
        return folder


def _load_folder(path: Path):
    from safetensors.torch import load_file
    from transformers import EncodecConfig

    cfg = EncodecConfig.from_pretrained(path)
    model = build_encodec(cfg)
    weights = path / "model.safetensors"
    if weights.exists():
        state = load_file(str(weights))
    elif (path / "pytorch_model.bin").exists():
        state = torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
    else:
        raise CodecError(f"{path}: no model.safetensors (or pytorch_model.bin)")
    own = model.state_dict()
    state = {k: v.to(own[k].dtype) if k in own else v for k, v in state.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith(("cluster_size", "embed_avg", "inited"))]
    if missing or unexpected:
        raise CodecError(f"{path}: weights do not match config.json (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model.eval()
