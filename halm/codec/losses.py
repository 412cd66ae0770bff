"""The codec trainer's losses (`halm codec train`): multi-scale mel (EnCodec's), a linear-frequency
multi-resolution STFT loss (Parallel WaveGAN's), and the pitch head's targets and loss (ours).

Both spectral losses read the magnitudes of `stft_magnitudes`, which the trainer computes once per step
for the FFT sizes they share."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from halm.audio.mel import mel_filterbank, stft_magnitude
from halm.codec.harmonic import LOG_F0_REF


def pitch_targets(x: torch.Tensor, sample_rate: int, hop: int, n_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 1, N) audio -> log F0 (B, T) and voiced (B, T) at the codec's frames: YIN every 10 ms
    (`yin_f0`, 40 ms frames), the YIN frame whose centre is nearest each codec frame's centre."""
    from halm.metrics.pitch import yin_f0

    B = x.shape[0]
    log_f0, voiced = torch.zeros(B, n_frames), torch.zeros(B, n_frames, dtype=torch.bool)
    centres = (np.arange(n_frames) + 0.5) * hop / sample_rate  # seconds
    for b in range(B):
        f0 = yin_f0(x[b, 0].detach().cpu().numpy(), sample_rate)  # (F,), frame i centred at 0.02 + 0.01 i s
        if not len(f0):
            continue
        f = f0[np.clip(np.round((centres - 0.02) / 0.01).astype(int), 0, len(f0) - 1)]  # (T,)
        v = torch.from_numpy(f > 0)
        voiced[b] = v
        log_f0[b, v] = torch.from_numpy(np.log(f[f > 0]).astype(np.float32))
    return log_f0, voiced


def pitch_loss(head: torch.nn.Linear, q: torch.Tensor, log_f0: torch.Tensor, voiced: torch.Tensor) -> torch.Tensor:
    """Latent q (B, D, T) -> L1 of the head's log F0 on voiced frames + BCE of its voicing logit on all frames."""
    out = head(q.transpose(1, 2))  # (B, T, 2): log(F0 / 150 Hz), voicing logit
    l_voice = F.binary_cross_entropy_with_logits(out[..., 1], voiced.float())
    if not voiced.any():
        return l_voice
    return (out[..., 0] - (log_f0 - LOG_F0_REF))[voiced].abs().mean() + l_voice


def stft_magnitudes(x: torch.Tensor, n_ffts) -> dict[int, torch.Tensor]:
    """x (B, N) -> {n: |STFT| (B, n/2 + 1, frames)}: Hann window of n, hop n/4, the spectra the codec losses
    read. The trainer computes them once per step for the losses that share FFT sizes."""
    return {n: stft_magnitude(x, n, n // 4) for n in n_ffts}


def _floored_log_l1(sy: torch.Tensor, sx: torch.Tensor, floor: float) -> torch.Tensor:
    """L1 of log magnitudes (B, F, frames), both floored `floor` x the loudest bin of each target clip."""
    f = (sx.detach().amax(dim=(1, 2), keepdim=True) * floor).clamp_min(1e-8)  # (B, 1, 1)
    return (torch.log(torch.maximum(sy, f)) - torch.log(torch.maximum(sx, f))).abs().mean()


class MultiScaleMelLoss(torch.nn.Module):
    """Sum over FFT sizes of L1(mel) + L1(log mel) between reconstruction and target (summed, as EnCodec).

    The log is floored `floor_db` below each target clip's loudest mel bin (librosa's `top_db`), the
    same floor for both signals: 40% of the n_fft-128 mel bins of our corpora are below 1e-4 (digital
    silence of synthetic audio), and with a fixed 1e-5 floor the loss paid for reproducing the exact
    depth of silence as much as for content. `floor_db=None` keeps the fixed 1e-5 floor.
    `spectra`: (|STFT| of y, of x) from `stft_magnitudes`, holding at least these FFT sizes."""

    def __init__(self, sample_rate: int, n_ffts=(128, 256, 512, 1024, 2048), floor_db: float | None = 80.0):
        super().__init__()
        self.n_ffts = list(n_ffts)
        self.floor = None if floor_db is None else 10 ** (-floor_db / 20)  # mel magnitudes: 20 dB per decade
        for n in self.n_ffts:
            fb = mel_filterbank(sample_rate, n, min(64, n // 4))
            self.register_buffer(f"fb_{n}", torch.from_numpy(fb), persistent=False)

    def mel(self, x: torch.Tensor, n: int) -> torch.Tensor:
        return getattr(self, f"fb_{n}") @ stft_magnitudes(x, [n])[n]  # (B, M, frames)

    def forward(self, y: torch.Tensor, x: torch.Tensor, spectra=None) -> torch.Tensor:
        sy, sx = spectra or (stft_magnitudes(y, self.n_ffts), stft_magnitudes(x, self.n_ffts))
        loss = y.new_zeros(())
        for n in self.n_ffts:
            my, mx = getattr(self, f"fb_{n}") @ sy[n], getattr(self, f"fb_{n}") @ sx[n]  # (B, M, frames)
            if self.floor is None:
                log_l1 = (torch.log(my + 1e-5) - torch.log(mx + 1e-5)).abs().mean()
            else:
                log_l1 = _floored_log_l1(my, mx, self.floor)
            loss = loss + (my - mx).abs().mean() + log_l1
        return loss


class MultiResolutionSTFTLoss(torch.nn.Module):
    """Parallel WaveGAN's multi-resolution STFT loss (Yamamoto et al. 2020) on linear frequency bins: per FFT
    size, spectral convergence ||X| - |Y||_F / ||X||_F plus L1 of the log magnitudes (floored `floor_db`
    below each target clip's peak, as MultiScaleMelLoss), averaged over sizes. `spectra` as MultiScaleMelLoss.

    Next to the mel loss it adds resolution where pitch lives: at 24 kHz the lowest of 64 mel bands is
    ~37 Hz wide and they widen from there, while the 2048-point STFT's 11.7 Hz bins resolve each harmonic
    of a voice; the spectral convergence term weighs the loud (voiced) bins most."""

    def __init__(self, n_ffts=(512, 1024, 2048), floor_db: float = 80.0):
        super().__init__()
        self.n_ffts = list(n_ffts)
        self.floor = 10 ** (-floor_db / 20)

    def forward(self, y: torch.Tensor, x: torch.Tensor, spectra=None) -> torch.Tensor:
        """y, x (B, N) -> scalar."""
        sy, sx = spectra or (stft_magnitudes(y, self.n_ffts), stft_magnitudes(x, self.n_ffts))
        loss = y.new_zeros(())
        for n in self.n_ffts:
            conv = torch.linalg.vector_norm(sx[n] - sy[n], dim=(1, 2)) / torch.linalg.vector_norm(sx[n], dim=(1, 2)).clamp_min(1e-8)
            loss = loss + conv.mean() + _floored_log_l1(sy[n], sx[n], self.floor)
        return loss / len(self.n_ffts)
