"""Causal log-mel front-end aligned to codec frames (Whisper-GPT's continuous input).

A codec with hop H turns N samples into T = ceil(N / H) frames (EnCodec pads the end to a whole
frame; checked against transformers' EncodecModel in the tests). For every codec frame t we return
one *slice* of r mel frames computed with mel hop h = H / r:

    mel frame j (j = t*r + i, i < r) analyses samples [(j+1)*h - n_fft, (j+1)*h)

so the last mel frame of slice t ends exactly where codec frame t ends, at (t+1)*H. Samples before 0
are zeros (left padding only); samples in [N, T*H) are the zeros the codec itself pads with. Slice t
therefore depends only on samples < (t+1)*H: no future leakage, unlike a centred STFT, which would
look up to n_fft/2 samples ahead into audio the LM is asked to predict.

Log compression (Whisper-style, made causal): log10(max(mel_power, floor)), then (x + 4) / 4.
Whisper also clamps at (utterance max - 8); that max looks at the whole clip, i.e. the future, so we
use the fixed floor instead (floor = 1e-8, an 80 dB range below a full-scale sine's bin power).
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from halm.errors import UserError


def n_codec_frames(n_samples: int, hop_length: int) -> int:
    """Codec frames for n_samples: ceil(n / H), as EnCodec pads the last partial frame."""
    if n_samples <= 0:
        raise ValueError("audio has no samples")
    return -(-n_samples // hop_length)


@dataclass(frozen=True)
class MelConfig:
    sample_rate: int = 24000
    hop_length: int = 320  # the codec's hop H (samples per codec frame)
    frames_per_token: int = 2  # r: mel frames per codec frame; mel hop = H / r
    n_mels: int = 80  # Whisper's bin count
    n_fft: int = 0  # 0 -> 2 * H (26.7 ms at 24 kHz)
    win_length: int = 0  # 0 -> n_fft (Hann window)
    fmin: float = 0.0
    fmax: float = 0.0  # 0 -> sample_rate / 2
    log_floor: float = 1e-8

    def __post_init__(self):
        if self.hop_length % self.frames_per_token:
            raise UserError(
                f"frames_per_token={self.frames_per_token} must divide the codec hop {self.hop_length}"
            )
        if self.n_fft == 0:
            object.__setattr__(self, "n_fft", 2 * self.hop_length)
        if self.win_length == 0:
            object.__setattr__(self, "win_length", self.n_fft)
        if self.fmax == 0.0:
            object.__setattr__(self, "fmax", self.sample_rate / 2)
        if not 0 < self.win_length <= self.n_fft:
            raise UserError(f"win_length {self.win_length} must be in (0, n_fft={self.n_fft}]")
        if self.n_fft < self.mel_hop:
            raise UserError(f"n_fft {self.n_fft} is shorter than the mel hop {self.mel_hop}: samples would be skipped")
        if not 0 <= self.fmin < self.fmax <= self.sample_rate / 2:
            raise UserError(f"need 0 <= fmin < fmax <= sample_rate/2, got {self.fmin}, {self.fmax}")

    @property
    def mel_hop(self) -> int:
        return self.hop_length // self.frames_per_token

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> MelConfig:
        return cls(**d)


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (librosa's default, htk=False): linear below 1 kHz, logarithmic above."""
    f = np.asarray(f, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz, logstep = 1000.0, np.log(6.4) / 27.0
    mels = f / f_sp
    return np.where(f >= min_log_hz, min_log_hz / f_sp + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, mels)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz, logstep = 1000.0, np.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None) -> np.ndarray:
    """Triangular mel filters (n_mels, n_fft//2 + 1), Slaney scale and area normalisation (as librosa)."""
    fmax = sample_rate / 2 if fmax is None else fmax
    fft_freqs = np.fft.rfftfreq(n_fft, d=1.0 / sample_rate)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))  # (M + 2,)
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_freqs[None, :]  # (M + 2, F)
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]  # equal area per filter
    return weights.astype(np.float32)


_FB_CACHE: dict[tuple, torch.Tensor] = {}


def _filterbank(cfg: MelConfig, device, dtype) -> torch.Tensor:
    key = (cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.fmin, cfg.fmax, str(device), dtype)
    if key not in _FB_CACHE:
        fb = mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.fmin, cfg.fmax)
        _FB_CACHE[key] = torch.from_numpy(fb).to(device=device, dtype=dtype)
    return _FB_CACHE[key]


def causal_log_mel(wav: torch.Tensor | np.ndarray, cfg: MelConfig) -> torch.Tensor:
    """(..., N) audio at cfg.sample_rate -> (..., T, r, M) log-mel slices, T = ceil(N / H).

    Slice t depends only on samples < (t+1)*H (see the module docstring).
    """
    x = torch.as_tensor(wav)
    if not torch.is_floating_point(x):
        raise TypeError(f"expected float audio, got {x.dtype}")
    if x.dtype not in (torch.float32, torch.float64):
        x = x.float()
    lead, n = x.shape[:-1], x.shape[-1]
    T = n_codec_frames(n, cfg.hop_length)
    h, r = cfg.mel_hop, cfg.frames_per_token
    x = x.reshape(-1, n)  # (B', N)
    x = F.pad(x, (cfg.n_fft - h, T * cfg.hop_length - n))  # (B', n_fft - h + T*H)
    window = torch.hann_window(cfg.win_length, periodic=True, dtype=x.dtype, device=x.device)
    spec = torch.stft(
        x, cfg.n_fft, hop_length=h, win_length=cfg.win_length, window=window, center=False, return_complex=True
    )  # (B', F, T*r)
    power = spec.real.square() + spec.imag.square()
    mel = torch.matmul(_filterbank(cfg, x.device, x.dtype), power)  # (B', M, T*r)
    logmel = (torch.log10(mel.clamp_min(cfg.log_floor)) + 4.0) / 4.0
    assert logmel.shape[-1] == T * r, (logmel.shape, T, r)
    return logmel.transpose(1, 2).reshape(*lead, T, r, cfg.n_mels)  # (..., T, r, M)


# ---- the centred STFT of halm's losses, metrics, judge and figures ------------------------------------------
@functools.cache
def hann(n: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The periodic Hann window of n samples (cached per device and dtype; never modify it)."""
    return torch.hann_window(n, device=device, dtype=dtype)


def stft_magnitude(x: torch.Tensor, n_fft: int, hop: int, power: float = 1.0) -> torch.Tensor:
    """|STFT|^power (..., n_fft/2 + 1, frames) of x (..., N): Hann window of n_fft, hop `hop`, centred frames
    (torch.stft's default). The one STFT of the codec losses and evaluation, the judge's log-mel and chroma,
    and the figures; the causal front-end above frames differently (left padding only)."""
    spec = torch.stft(x, n_fft, hop_length=hop, window=hann(n_fft, x.device, x.dtype), return_complex=True).abs()
    return spec if power == 1.0 else spec.pow(power)


# ---- the spectrogram of the figures and of the codec evaluation's mel L1 -----------------------------------
DISPLAY_N_FFT, DISPLAY_HOP, DISPLAY_MELS = 1024, 256, 80
TOP_DB = 80.0  # dynamic range kept below the peak


def log_mel(x: torch.Tensor, sr: int, floor: float | None = None) -> torch.Tensor:
    """log10 power mel (M, frames) of a 1-D signal (n_fft 1024, hop 256, 80 mels; not causal: for figures and
    the codec evaluation), floored at `floor` (default: TOP_DB below its own peak)."""
    fb = torch.from_numpy(mel_filterbank(sr, DISPLAY_N_FFT, DISPLAY_MELS))
    lm = torch.log10((fb @ stft_magnitude(x, DISPLAY_N_FFT, DISPLAY_HOP, power=2)).clamp_min(1e-12))
    return lm.clamp_min(float(lm.max()) - TOP_DB / 10 if floor is None else floor)


def display_mel(wav, sr: int, floor: float | None = None) -> tuple[np.ndarray, float]:
    """(image (frames, M) float32, frames per second) of mono audio (N,) or (C, N) (channels averaged): what
    halm's spectrogram figures draw."""
    x = torch.as_tensor(np.asarray(wav, dtype=np.float32))
    if x.dim() == 2:
        x = x.mean(0)
    return log_mel(x.contiguous(), sr, floor).T.numpy(), sr / DISPLAY_HOP
