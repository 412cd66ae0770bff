"""halm's harmonic branch beside the EnCodec decoder, and the one decode path that uses it (ours).

Every halm codec trained with EnCodec's recipe alone decoded every voice at the 75 Hz frame rate, one
pulse shape stamped per frame, although its codes carried the pitch (docs/results.md). `HarmonicBranch`
renders the pitch by construction; `decode_latent` runs the decoder and the branch together and is what
`Codec.decode` and the trainer call. A codec without a branch (every official checkpoint) decodes with
its decoder alone.
"""

from __future__ import annotations

import math

import torch

from halm.errors import UserError

LOG_F0_REF = math.log(150.0)  # pitch heads predict log(F0 / 150 Hz)


def hz_to_mel(f: torch.Tensor | float):
    return 2595.0 * (torch.log10(1.0 + f / 700.0) if torch.is_tensor(f) else math.log10(1.0 + f / 700.0))


class HarmonicBranch(torch.nn.Module):
    """A harmonic synthesizer beside the EnCodec decoder (ours; DDSP's harmonic oscillator bank, Engel et
    al. 2020, driven by a pitch read off the codes as in neural source-filter vocoders, Wang et al. 2019).

    `pitch`, a linear head on the quantized latent q (the trainer's pitch head, trained on YIN F0 +
    voicing), gives F0 and a voicing gate per frame; `amps`, an MLP on the decoder's LSTM output h, gives
    the amplitudes: either one per harmonic (`envelope=0`, linear), or a spectral envelope of `envelope`
    points on a mel-spaced grid from 0 Hz to Nyquist, read at each harmonic's frequency k * F0 (linear
    interpolation) and turned into an amplitude by DDSP's exp_sigmoid, 2 * sigmoid(x) ** ln(10) + 1e-7:
    a log-like scale, so a formant 40 dB above its valley is a difference of a few units, not a
    hundredfold one. The envelope is the source-filter factorisation: a formant stays at its frequency
    whatever the pitch, where per-harmonic amplitudes must move it from harmonic to harmonic as F0 moves.
    Controls are interpolated causally across a frame (from the previous frame's value to this one's),
    the phase is integrated sample by sample, harmonics above 0.95 x Nyquist are silent.

    `decoder_gate` g in [0, 1]: the decoder's output is scaled by 1 - g * voicing, so that on voiced
    frames the voice is the branch's and the decoder keeps the unvoiced rest (g = 0: the decoder is
    untouched, the branch only adds). The last layer of `amps` starts at zero weights (per-harmonic: zero
    bias, silent; envelope: every harmonic at 1e-4, -80 dB), so adding a branch with g = 0 to a trained
    codec leaves its output (nearly) unchanged. Deterministic and causal: a streaming decode
    carries the phase and the previous frame's controls (`state`).

    Legend: B batch, D latent channels, C LSTM channels, T frames, H hop, K harmonics, E envelope points,
    N = T * H samples.
    """

    def __init__(self, latent_dim: int, feature_dim: int, n_harmonics: int, hop: int, sample_rate: int,
                 width: int = 256, envelope: int = 0, decoder_gate: float = 0.0):
        super().__init__()
        if not 0.0 <= decoder_gate <= 1.0:
            raise UserError(f"decoder_gate must be in [0, 1], not {decoder_gate}")
        self.hop, self.sample_rate, self.envelope, self.decoder_gate = hop, sample_rate, envelope, float(decoder_gate)
        self.pitch = torch.nn.Linear(latent_dim, 2)  # log(F0 / 150 Hz), voicing logit
        self.amps = torch.nn.Sequential(torch.nn.Linear(feature_dim, width), torch.nn.GELU(),
                                        torch.nn.Linear(width, envelope or n_harmonics))
        torch.nn.init.zeros_(self.amps[-1].weight)
        torch.nn.init.constant_(self.amps[-1].bias, -4.28 if envelope else 0.0)  # exp_sigmoid(-4.28) ~ 1e-4
        self.register_buffer("harmonic", torch.arange(1, n_harmonics + 1, dtype=torch.float32)[:, None], persistent=False)  # (K, 1)

    def controls(self, q: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q (B, D, T), h (B, C, T) -> F0 in Hz (B, T), voicing in [0, 1] (B, T), amplitudes (B, K, T)."""
        p = self.pitch(q.transpose(1, 2)).detach()  # (B, T, 2); the synthesis trains no pitch (the pitch loss does)
        f0 = torch.exp(p[..., 0].clamp(math.log(40 / 150), math.log(1000 / 150)) + LOG_F0_REF)
        a = self.amps(h.transpose(1, 2)).transpose(1, 2)  # (B, K or E, T)
        if self.envelope:
            a = self.read_envelope(a, f0)
        return f0, torch.sigmoid(p[..., 1]), a

    def read_envelope(self, env: torch.Tensor, f0: torch.Tensor) -> torch.Tensor:
        """env (B, E, T) on the mel grid, f0 (B, T) -> the amplitude of every harmonic k * f0: (B, K, T)."""
        E = env.shape[1]
        pos = hz_to_mel(self.harmonic * f0[:, None, :]) / hz_to_mel(self.sample_rate / 2) * (E - 1)  # (B, K, T)
        pos = pos.clamp(0, E - 1)
        lo = pos.floor().long().clamp(max=E - 2)
        w = pos - lo
        x = torch.gather(env, 1, lo) * (1 - w) + torch.gather(env, 1, lo + 1) * w
        return 2.0 * torch.sigmoid(x).pow(math.log(10.0)) + 1e-7  # exp_sigmoid (DDSP)

    def _ramp(self, cur: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        """cur (..., T), prev (..., 1) the value before the first frame -> (..., T, H): from the previous
        frame's value to this one's, linearly, reaching it at the frame's last sample."""
        before = torch.cat([prev, cur[..., :-1]], dim=-1)
        w = torch.arange(1, self.hop + 1, device=cur.device, dtype=cur.dtype) / self.hop  # (H,)
        return before[..., None] + (cur - before)[..., None] * w

    def forward(self, q: torch.Tensor, h: torch.Tensor, state: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """-> the branch's audio (B, 1, N) and the voicing per sample (B, 1, N). state: {} on a stream's
        first call, then the dict as this call left it."""
        f0, voiced, amps = self.controls(q, h)
        B, T = f0.shape
        first = state is None or "phase" not in state
        prev_f0 = f0[:, :1] if first else state["f0"]
        prev_v = voiced[:, :1] if first else state["voiced"]
        prev_a = amps[..., :1] if first else state["amps"]
        rate = self._ramp(f0, prev_f0) / self.sample_rate  # (B, T, H) cycles per sample
        within = torch.cumsum(rate, dim=-1)  # (B, T, H) cycles since the frame's start
        start = torch.zeros(B, 1, dtype=torch.float64, device=f0.device) if first else state["phase"]
        totals = torch.cat([start, within[..., -1].double()], dim=1).cumsum(dim=1)  # (B, T + 1) cycles, exact enough
        phase = (totals[:, :-1].remainder(1.0).to(rate.dtype)[..., None] + within).reshape(B, 1, T * self.hop)  # (B, 1, N)
        k = self.harmonic
        audible = (k * rate.reshape(B, 1, -1) < 0.475).to(rate.dtype)  # (B, K, N): below 0.95 x Nyquist
        a = self._ramp(amps, prev_a).reshape(B, -1, T * self.hop)  # (B, K, N)
        gate = self._ramp(voiced, prev_v).reshape(B, 1, T * self.hop)  # (B, 1, N)
        out = gate * (a * audible * torch.sin(2 * math.pi * k * phase)).sum(dim=1, keepdim=True)  # (B, 1, N)
        if state is not None:
            state.update(phase=totals[:, -1:].remainder(1.0), f0=f0[:, -1:], voiced=voiced[:, -1:], amps=amps[..., -1:])
        return out, gate

    def mix(self, decoded: torch.Tensor, q: torch.Tensor, h: torch.Tensor, state: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The decoder's output (B, 1, N) -> (its gated share, the branch's audio), each (B, 1, N); their
        sum is the decoding."""
        harm, voiced = self(q, h, state)
        if self.decoder_gate:
            decoded = decoded * (1.0 - self.decoder_gate * voiced)
        return decoded, harm


def lstm_end(model) -> int:
    """Index of the first decoder layer after the LSTM (after the first conv when there is none)."""
    from transformers.models.encodec.modeling_encodec import EncodecLSTM

    layers = list(model.decoder.layers)
    return 2 if len(layers) > 1 and isinstance(layers[1], EncodecLSTM) else 1


def decode_latent(model, q: torch.Tensor, parts: bool = False):
    """Quantized latent q (B, D, T) -> audio (B, C, T * hop): the decoder, plus the harmonic branch if any.
    parts=True: (the decoder's share, the branch's output or None) instead of their sum."""
    branch = getattr(model, "harmonic", None)
    if branch is None:
        y = model.decoder(q)
        return (y, None) if parts else y
    layers = model.decoder.layers
    split = lstm_end(model)
    h = q
    for layer in layers[:split]:
        h = layer(h)  # (B, C, T)
    x = h
    for layer in layers[split:]:
        x = layer(x)
    x, harm = branch.mix(x, q, h)
    return (x, harm) if parts else x + harm
