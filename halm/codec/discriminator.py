"""The multi-scale STFT discriminator of EnCodec (Défossez et al. 2022, section 3.4), for `halm codec train`.

Each scale takes the complex STFT of the waveform at one FFT size (real and imaginary parts as two
channels of a (time, frequency) image), runs a small 2-D conv stack whose frequency axis is strided
and whose time axis is dilated, and returns per-patch logits plus every intermediate feature map.
The codec's decoder is trained with the hinge loss on the logits and the relative L1 distance between
the feature maps of the real and the decoded audio (feature matching); the discriminator with the
hinge loss. Unlike the mel losses, the complex STFT at 2048 points resolves single harmonics of a
voice and keeps the phase, so these losses can see what an average mel spectrum does not (whether
they buy better pitch on our budget is measured in docs/results.md).

Legend: B batch, N samples, C filters, T STFT frames, F frequency bins.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import weight_norm


class STFTScale(nn.Module):
    """One scale: STFT (n_fft, hop n_fft/4) -> 2-D conv stack -> logits (B, 1, T', F') and feature maps."""

    def __init__(self, n_fft: int, filters: int = 16, dilations=(1, 2, 4)):
        super().__init__()
        self.n_fft = n_fft
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        convs = [nn.Conv2d(2, filters, (3, 9), padding=(1, 4))]
        for d in dilations:  # time dilated, frequency halved
            convs.append(nn.Conv2d(filters, filters, (3, 9), stride=(1, 2), dilation=(d, 1), padding=(d, 4)))
        convs.append(nn.Conv2d(filters, filters, (3, 3), padding=(1, 1)))
        self.convs = nn.ModuleList(weight_norm(c) for c in convs)
        self.post = weight_norm(nn.Conv2d(filters, 1, (3, 3), padding=(1, 1)))

    def forward(self, wav: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """wav (B, N) -> logits (B, 1, T, F'), features [(B, C, T, F_i)]."""
        spec = torch.stft(wav, self.n_fft, hop_length=self.n_fft // 4, window=self.window, normalized=True,
                          center=False, return_complex=True)  # (B, F, T)
        x = torch.stack([spec.real, spec.imag], dim=1).transpose(2, 3)  # (B, 2, T, F)
        feats = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.2)
            feats.append(x)
        return self.post(x), feats


class MultiScaleSTFTDiscriminator(nn.Module):
    def __init__(self, n_ffts=(2048, 1024, 512, 256, 128), filters: int = 16):
        super().__init__()
        self.scales = nn.ModuleList(STFTScale(n, filters) for n in n_ffts)

    def forward(self, wav: torch.Tensor) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
        """wav (B, N) -> one (logits, features) per scale."""
        return [scale(wav) for scale in self.scales]


def generator_losses(disc: MultiScaleSTFTDiscriminator, fake: torch.Tensor, real: torch.Tensor):
    """(adversarial, feature matching) losses of the decoder; the discriminator's own weights get no gradient.

    adversarial: mean over scales of mean(relu(1 - D(fake))) (hinge); feature matching: mean over
    scales and layers of |f(real) - f(fake)| / mean |f(real)| (EnCodec's relative L1).
    """
    disc.requires_grad_(False)
    try:
        out_fake = disc(fake)
        with torch.no_grad():
            out_real = disc(real)
    finally:
        disc.requires_grad_(True)
    adv = torch.stack([F.relu(1 - logits).mean() for logits, _ in out_fake]).mean()
    feat = torch.stack([(fr - ff).abs().mean() / (fr.abs().mean() + 1e-8)
                        for (_, f_fake), (_, f_real) in zip(out_fake, out_real)
                        for ff, fr in zip(f_fake, f_real)]).mean()
    return adv, feat


def discriminator_loss(disc: MultiScaleSTFTDiscriminator, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Hinge loss of the discriminator: mean over scales of relu(1 - D(real)) + relu(1 + D(fake)); fake is detached."""
    out_real, out_fake = disc(real), disc(fake.detach())
    return torch.stack([F.relu(1 - lr).mean() + F.relu(1 + lf).mean()
                        for (lr, _), (lf, _) in zip(out_real, out_fake)]).mean()
