"""Training halm's own codec (`halm codec train`): transformers' EncodecModel architecture, our loop.

transformers' quantizer is inference-only, so the residual VQ is trained here: codebooks are learned
by exponential moving averages of the assigned encoder frames (as in EnCodec / SoundStream), started
by k-means on the first batch, with dead codes (EMA count below a threshold) replaced by random
frames of the current batch; the first `ae_warmup_steps` train a plain autoencoder so that k-means
starts from informative latents, and the convolutions get a data-dependent (LSUV) init: with the
default init the encoder's output was nearly constant, the loss sat on a plateau and codebook 0
collapsed onto one entry (see `data_dependent_init`). Losses: multi-scale mel (L1 on linear and log mel over
5 FFT sizes, the log floored 80 dB below each clip's peak), waveform L1, the commitment loss and a pull
of the latent's rms towards 1 (unconstrained, it drifted to ~50 during the warm-up and then collapsed
onto a few codes under the commitment loss); quantizer dropout (1..K codebooks per step) so that decoding
from the first K' codebooks works, which Whisper-GPT's coarse-only audio needs. With `adv_weight > 0`,
EnCodec's multi-scale STFT discriminator (halm.codec.discriminator) adds a hinge adversarial loss and
feature matching, and is trained alongside (its weights and optimizer are checkpointed with the rest);
off by default: it makes a step ~3.5x slower on one CPU thread (docs/results.md: what 1,600 steps of it bought).
With `pitch_weight > 0` (ours, not EnCodec's), a linear head must read the input's F0 and voicing (YIN,
`pitch_targets`) off the quantized latent at every frame: a probe found that the latents of codecs
trained with the losses above carry almost no pitch (docs/results.md), so no decoder could render it.
`stft_weight > 0` adds a linear-frequency multi-resolution STFT loss (`MultiResolutionSTFTLoss`), and
`decoder_activation="snake"` replaces the decoder's ELUs by Snake (`halm.codec.model.Snake`): an ELU
decoder of this size renders even a single clip it is fitted to at the 75 Hz frame rate, a Snake one
can leave it (benchmarks/codec_pitch_overfit.py, docs/results.md). `harmonics=K` adds a harmonic branch
(`halm.codec.harmonic.HarmonicBranch`) whose pitch head is the trainer's (so it needs `pitch_weight > 0`);
it has its own optimizer and may join a run with a plain pitch head through --init-from, starting silent
from that head. `branch_weight > 0` adds a mel loss on the branch's output alone: without it the branch
stayed at a few percent of the output next to the decoder's frame-rate pulse (docs/results.md).
`harmonic_envelope=E` makes the branch read its harmonics' amplitudes off a spectral envelope of E
points (formants stay put when the pitch moves), and `decoder_gate=g` scales the decoder's output by
1 - g * voicing so that voiced frames are the branch's; an --init-from may change either (a changed
envelope restarts the branch's last layer from zero and its optimizer afresh).

Resumable: rerunning the same command continues from RUN/train_state (model with codebook statistics,
optimizer, step, RNG), written atomically every `ckpt_every` steps; RUN/codec holds the latest
inference export, loadable with `Codec.load(RUN/codec)`.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from halm.codec.discriminator import MultiScaleSTFTDiscriminator, discriminator_loss, generator_losses
from halm.codec.harmonic import decode_latent
from halm.codec.losses import (
    MultiResolutionSTFTLoss,
    MultiScaleMelLoss,
    pitch_loss,
    pitch_targets,
    stft_magnitudes,
)
from halm.codec.model import Codec, build_encodec, fast_padding
from halm.codec.rvq import RVQTrainer
from halm.errors import UserError
from halm.runkit import TrainingRun

RUN_SETTINGS = ("steps", "threads", "ckpt_every", "log_every", "device")  # how a run executes; may change on resume
# a run folder whose train_config.json lacks one of these fields (written before the field existed) was trained with
# this value; resume and --init-from read it so
MISSING_FIELD_VALUES = {"ema_every_codebook": False, "latent_weight": 0.0, "adv_weight": 0.0, "feat_weight": 2.0, "disc_filters": 16,
          "disc_lr": 3e-4, "pitch_weight": 0.0, "stft_weight": 0.0, "decoder_activation": "elu",
          "harmonics": 0, "branch_weight": 0.0, "harmonic_envelope": 0, "decoder_gate": 0.0}
# what a checkpoint must share with a run that starts from it (--init-from)
ARCHITECTURE = ("sample_rate", "ratios", "num_filters", "hidden_size", "num_lstm_layers", "n_codebooks", "codebook_size",
                "ae_warmup_steps", "decoder_activation")


@dataclass
class CodecTrainConfig:
    sample_rate: int = 24000
    ratios: list[int] = field(default_factory=lambda: [8, 5, 4, 2])  # hop 320 -> 75 Hz at 24 kHz
    num_filters: int = 16
    hidden_size: int = 128
    num_lstm_layers: int = 2
    decoder_activation: str = "elu"  # "snake": Snake instead of ELU in the decoder (halm.codec.model.Snake; ours, as DAC)
    n_codebooks: int = 8
    codebook_size: int = 1024
    segment_seconds: float = 0.5
    batch_size: int = 4  # small batches, many steps: on 2 CPU cores 4 x 0.5 s learned faster per second than 8 x 1 s
    steps: int = 12000
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.99)
    ema_decay: float = 0.99
    dead_code_threshold: float = 0.05  # EMA assignments per step below which a code is re-seeded (uniform use: B*T/size)
    kmeans_iters: int = 10
    ae_warmup_steps: int = 1200  # plain autoencoder first, so k-means starts from informative latents
    commit_weight: float = 0.25
    # (rms(latent) - 1)^2: holds the latent scale near 1 (it drifted to ~50, then collapsed under the commitment loss)
    latent_weight: float = 1.0
    wave_weight: float = 0.1
    mel_weight: float = 1.0
    mel_floor_db: float | None = 80.0  # log-mel floor below each clip's peak; None: a fixed floor of 1e-5
    quantizer_dropout: bool = True
    adv_weight: float = 0.0  # hinge loss of the STFT discriminator on the decoder; 0: no discriminator (EnCodec: 3)
    feat_weight: float = 2.0  # its feature-matching loss (HiFi-GAN: 2 with adv 1; EnCodec: 3 and 3); used only when adv_weight > 0
    disc_filters: int = 16  # channels of each discriminator scale (EnCodec: 32)
    disc_lr: float = 3e-4  # the discriminator's Adam learning rate (betas as the codec's)
    pitch_weight: float = 0.0  # > 0: a linear head reads log F0 + voicing of the input off the quantized latent (ours)
    # > 0: a harmonic branch with this many harmonics, driven by the pitch head (halm.codec.harmonic.HarmonicBranch; ours)
    harmonics: int = 0
    # > 0: the branch's amplitudes come from a spectral envelope of this many mel-spaced points (0: one per harmonic)
    harmonic_envelope: int = 0
    decoder_gate: float = 0.0  # in [0, 1]: the decoder's output is scaled by 1 - decoder_gate * voicing (voiced frames are the branch's)
    branch_weight: float = 0.0  # > 0: the branch's output alone must match the input too (mel loss), so it learns the voiced envelope
    stft_weight: float = 0.0  # > 0: linear-frequency STFT loss (spectral convergence + log magnitude), resolves harmonics
    ema_every_codebook: bool = True  # EMA-update (and re-seed) all K codebooks each step, not only the n_q of its dropout draw
    ckpt_every: int = 400
    log_every: int = 10
    seed: int = 0
    threads: int = 0  # torch CPU threads (0: torch's default); 1 avoids oversubscription when sharing cores
    device: str = "auto"  # "auto" (CUDA when present, else CPU), "cpu", "cuda", "cuda:1"; may change on resume

    def override(self, pairs: list[str]) -> CodecTrainConfig:
        """Apply `key=value` overrides (values parsed as JSON when possible, else kept as strings)."""
        from halm.config import apply_overrides

        return apply_overrides(self, pairs)

    def encodec_config(self):
        from transformers import EncodecConfig

        frame_rate = self.sample_rate / int(np.prod(self.ratios))
        bits = math.log2(self.codebook_size)
        return EncodecConfig(
            target_bandwidths=[round(k * bits * frame_rate / 1000, 4) for k in range(1, self.n_codebooks + 1)],
            sampling_rate=self.sample_rate, audio_channels=1, normalize=False, chunk_length_s=None, overlap=None,
            hidden_size=self.hidden_size, num_filters=self.num_filters, num_residual_layers=1,
            upsampling_ratios=list(self.ratios), norm_type="weight_norm", use_causal_conv=True,
            num_lstm_layers=self.num_lstm_layers, codebook_size=self.codebook_size, codebook_dim=self.hidden_size,
            use_conv_shortcut=True, decoder_activation=self.decoder_activation, harmonics=self.harmonics,
            harmonic_envelope=self.harmonic_envelope, decoder_gate=self.decoder_gate,
        )


@torch.no_grad()
def data_dependent_init(model, audio: torch.Tensor) -> None:
    """LSUV-style init (Mishkin & Matas 2015): zero conv biases, then walk the convolutions in forward
    order and rescale each weight-norm gain so its output has unit std on real audio (the decoder's
    last one: the audio's std). With transformers' default init the input's share of the latent
    shrank ~2x per encoder stage while the biases' constant grew (time-std 0.0006 vs mean 0.034 at
    the latent), so the encoder carried almost no information and training sat on a plateau."""
    convs = [m for m in list(model.encoder.modules()) + list(model.decoder.modules())
             if type(m).__name__ in ("EncodecConv1d", "EncodecConvTranspose1d")]
    for m in convs:
        if m.conv.bias is not None:
            m.conv.bias.zero_()
    target_out = float(audio.std())
    for i, m in enumerate(convs):
        seen = {}
        handle = m.register_forward_hook(lambda mod, inp, out, seen=seen: seen.__setitem__("std", float(out.std())))
        model.decoder(model.encoder(audio))
        handle.remove()
        target = target_out if i == len(convs) - 1 else 1.0
        gain = m.conv.parametrizations.weight.original0 if hasattr(m.conv, "parametrizations") else m.conv.weight
        gain.mul_(target / max(seen["std"], 1e-8))


class AudioCrops:
    """All training audio in memory (float32 at the codec rate), random fixed-length crops."""

    def __init__(self, sources: list[str], sample_rate: int, segment: int, progress: bool = True):
        from halm.audio.io import AudioError, load_audio
        from halm.audio.sources import open_source

        self.clips, self.skipped = [], []
        items = [it for s in sources for it in open_source(s)]
        for it in tqdm(items, desc="load audio", disable=not progress, dynamic_ncols=True):
            try:
                wav, _ = load_audio(it.path, sample_rate=sample_rate, warn_silent=False)
            except AudioError as e:
                self.skipped.append(str(e))
                continue
            if wav.shape[1] >= segment:
                self.clips.append(torch.from_numpy(wav[0]))
        if not self.clips:
            raise UserError(f"no clip of at least {segment / sample_rate:.2f} s in {sources}")
        self.segment = segment
        self.weights = torch.tensor([len(c) for c in self.clips], dtype=torch.float64)

    def seconds(self, sample_rate: int) -> float:
        return float(self.weights.sum()) / sample_rate

    def batch(self, n: int, gen: torch.Generator) -> torch.Tensor:
        which = torch.multinomial(self.weights, n, replacement=True, generator=gen)
        out = []
        for i in which.tolist():
            clip = self.clips[i]
            start = int(torch.randint(len(clip) - self.segment + 1, (1,), generator=gen))
            out.append(clip[start: start + self.segment])
        return torch.stack(out)[:, None]  # (B, 1, N)


def resolve_device(spec: str) -> torch.device:
    """The codec trainer's `device` setting (halm.config.resolve_device)."""
    from halm.config import resolve_device as resolve

    return resolve(spec, flag="--set device=")


def train_codec(cfg: CodecTrainConfig, sources: list[str], out: str | os.PathLike, progress: bool = True,
                init_from: str | os.PathLike | None = None) -> dict:
    """Train (or resume) a codec run in `out`. init_from: another run folder whose last checkpoint (weights,
    codebooks, optimizer, RNG, step) starts this run, which may use other settings (a recipe change
    mid-training, recorded in out/init_from.json); ignored once `out` has a checkpoint of its own.

    The run kit (halm.runkit) keeps the folder: OUT/.lock while training, train_config.json (a resume must
    match it but for RUN_SETTINGS), train_state/ (written as a whole: a kill leaves one complete step),
    metrics.jsonl and tb/."""
    with TrainingRun(out, config_file="train_config.json", state_dir="train_state", state_file="trainer.pt") as kit:
        return _train_codec(kit, cfg, sources, progress, init_from)


def _train_codec(kit: TrainingRun, cfg: CodecTrainConfig, sources: list[str], progress: bool,
                 init_from: str | os.PathLike | None) -> dict:
    out = kit.folder
    mine = json.loads(json.dumps(asdict(cfg)))  # as stored (tuples become lists)
    kit.settings(mine, may_change=RUN_SETTINGS, normalize=lambda old: {**MISSING_FIELD_VALUES, **old})

    device = resolve_device(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.set_flush_denormal(True)  # a run slowed 3x mid-way (1.5 -> 4.6 s/step), denormals suspected
    torch.manual_seed(cfg.seed)
    model = fast_padding(build_encodec(cfg.encodec_config())).to(device)  # initialised on the CPU: the same on any device
    rvq = RVQTrainer(model.quantizer, cfg)
    mel_loss = MultiScaleMelLoss(cfg.sample_rate, floor_db=cfg.mel_floor_db).to(device)
    stft_loss = MultiResolutionSTFTLoss() if cfg.stft_weight > 0 else None
    opt = torch.optim.Adam([p for n, p in model.named_parameters() if not n.startswith("harmonic.")], lr=cfg.lr, betas=cfg.betas)
    disc = disc_opt = None
    if cfg.adv_weight > 0:
        disc = MultiScaleSTFTDiscriminator(filters=cfg.disc_filters).to(device)
        disc_opt = torch.optim.Adam(disc.parameters(), lr=cfg.disc_lr, betas=cfg.betas)
    pitch_head = pitch_opt = None
    branch = getattr(model, "harmonic", None)  # its own optimizer: it may be added to a run that had none
    if branch is None and (cfg.branch_weight > 0 or cfg.harmonic_envelope or cfg.decoder_gate):
        raise UserError("branch_weight, harmonic_envelope and decoder_gate need a harmonic branch (harmonics > 0)")
    if cfg.harmonic_envelope == 1 or cfg.harmonic_envelope < 0:
        raise UserError(f"harmonic_envelope must be 0 (one amplitude per harmonic) or >= 2 points, not {cfg.harmonic_envelope}")
    if branch is not None:
        if cfg.pitch_weight <= 0:
            raise UserError("harmonics > 0 needs pitch_weight > 0: the harmonic branch is driven by the pitch head")
        pitch_head = branch.pitch
        pitch_opt = torch.optim.Adam(branch.parameters(), lr=cfg.lr, betas=cfg.betas)
    elif cfg.pitch_weight > 0:
        with torch.random.fork_rng(devices=[]):  # its own seed: turning the head on leaves the run's random stream as it was
            torch.manual_seed(cfg.seed + 2)
            pitch_head = torch.nn.Linear(cfg.hidden_size, 2).to(device)
        pitch_opt = torch.optim.Adam(pitch_head.parameters(), lr=cfg.lr, betas=cfg.betas)
    gen = torch.Generator().manual_seed(cfg.seed)
    step = 0
    seg = int(cfg.segment_seconds * cfg.sample_rate)
    data = AudioCrops(sources, cfg.sample_rate, seg, progress)
    resume_dir = own = kit.last_checkpoint()
    new_envelope = False  # an --init-from whose branch read its amplitudes otherwise
    if own is None and init_from is not None:
        resume_dir = kit.last_checkpoint(root=init_from)
        if resume_dir is None:
            raise FileNotFoundError(f"--init-from {init_from}: no checkpoint at {Path(init_from) / 'train_state'}")
        src = {**MISSING_FIELD_VALUES, **json.loads((Path(init_from) / "train_config.json").read_text())}
        differ = {k: (src.get(k), mine[k]) for k in ARCHITECTURE if src.get(k) != mine[k]}
        if src["harmonics"] not in (0, mine["harmonics"]):  # a harmonic branch may be added, not changed
            differ["harmonics"] = (src["harmonics"], mine["harmonics"])
        if differ:
            raise UserError(f"--init-from {init_from}: its checkpoint has other {differ}; these cannot change mid-training")
        new_envelope = bool(src["harmonics"]) and src["harmonic_envelope"] != mine["harmonic_envelope"]
    if resume_dir is not None:
        weights, st = kit.load(resume_dir)  # on the CPU: load_state_dict and the optimizers move them
        state = weights["model"]
        if new_envelope:  # amplitudes of another kind: the branch's last layer starts at zero again
            state = {k: v for k, v in state.items() if not k.startswith("harmonic.amps.2.")}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or any(not k.startswith("harmonic.") for k in missing):
            raise UserError(f"{resume_dir}: checkpoint does not match the model (missing {missing[:3]}, unexpected {unexpected[:3]})")
        opt.load_state_dict(st["optimizer"])
        for group in opt.param_groups:  # the checkpoint's groups carry its lr/betas; an --init-from may change them
            group["lr"], group["betas"] = cfg.lr, tuple(cfg.betas)
        gen.set_state(st["generator"])
        torch.set_rng_state(st["torch_rng"])
        if disc is not None and "discriminator" in weights:  # else: a run without one, so a fresh one
            disc.load_state_dict(weights["discriminator"])
            disc_opt.load_state_dict(st["disc_optimizer"])
            for group in disc_opt.param_groups:
                group["lr"], group["betas"] = cfg.disc_lr, tuple(cfg.betas)
        if branch is not None and "harmonic_optimizer" in st and not new_envelope:
            pitch_opt.load_state_dict(st["harmonic_optimizer"])
        elif pitch_head is not None and "pitch_head" in st:  # a run with a pitch head: the branch starts from its head
            pitch_head.load_state_dict(st["pitch_head"])
            if branch is None:
                pitch_opt.load_state_dict(st["pitch_optimizer"])
        # else: a run without one, so a fresh one
        step = int(st["step"])
        if own is None:
            (out / "init_from.json").write_text(json.dumps({"run": str(init_from), "step": step}) + "\n")
    else:
        data_dependent_init(model, data.batch(cfg.batch_size, torch.Generator().manual_seed(cfg.seed + 1)).to(device))
    model.train()
    log = kit.metrics(step)  # rows an interrupted run logged after its last checkpoint are dropped
    bar = tqdm(total=cfg.steps, initial=step, desc="codec train", disable=not progress, dynamic_ncols=True)
    t0, audio_done = time.perf_counter(), 0.0

    def save():
        kit.save({"model": model.state_dict(), **({"discriminator": disc.state_dict()} if disc is not None else {})},
                 {"optimizer": opt.state_dict(), "generator": gen.get_state(), "torch_rng": torch.get_rng_state(),
                  "step": step, **({"disc_optimizer": disc_opt.state_dict()} if disc is not None else {}),
                  **({"pitch_head": pitch_head.state_dict(), "pitch_optimizer": pitch_opt.state_dict()}
                     if pitch_head is not None and branch is None else {}),
                  **({"harmonic_optimizer": pitch_opt.state_dict()} if branch is not None else {})})
        export = build_encodec(model.config)
        export.load_state_dict(model.state_dict())
        Codec(export, str(out / "codec")).save(out / "codec")

    while step < cfg.steps:
        if step == cfg.ae_warmup_steps:  # (also right after a resume at this step: same RNG state, same init)
            with torch.no_grad():
                frames_needed = 4 * cfg.codebook_size
                n_seg = max(cfg.batch_size, -(-frames_needed // int(cfg.segment_seconds * cfg.sample_rate / model.config.hop_length)))
                emb0 = model.encoder(data.batch(n_seg, gen).to(device))  # (n_seg, D, T)
                rvq.kmeans_init(emb0, gen, frames_per_step=cfg.batch_size * emb0.shape[-1])
        x = data.batch(cfg.batch_size, gen).to(device)  # (B, 1, N); crops and every random draw come from the CPU
        n_q = int(torch.randint(1, cfg.n_codebooks + 1, (1,), generator=gen)) if cfg.quantizer_dropout else cfg.n_codebooks
        emb = model.encoder(x)  # (B, D, T)
        if step < cfg.ae_warmup_steps:
            q, commit, codes = emb, emb.new_zeros(()), None
        else:
            q, commit, codes = rvq(emb, n_q, gen)
        y_dec, y_harm = decode_latent(model, q, parts=True)
        y = (y_dec if y_harm is None else y_dec + y_harm)[..., : x.shape[-1]]  # (B, 1, N)
        sizes = set(mel_loss.n_ffts) | set(stft_loss.n_ffts if stft_loss is not None else ())
        spectra = stft_magnitudes(y[:, 0], sizes), stft_magnitudes(x[:, 0], sizes)  # once for both spectral losses
        l_mel = mel_loss(y[:, 0], x[:, 0], spectra)
        l_wave = (y - x).abs().mean()
        l_scale = (emb.pow(2).mean().sqrt() - 1.0).pow(2)
        loss = cfg.mel_weight * l_mel + cfg.wave_weight * l_wave + cfg.commit_weight * commit + cfg.latent_weight * l_scale
        if stft_loss is not None:
            l_stft = stft_loss(y[:, 0], x[:, 0], spectra)
            loss = loss + cfg.stft_weight * l_stft
        if disc is not None:
            l_adv, l_feat = generator_losses(disc, y[:, 0], x[:, 0])
            loss = loss + cfg.adv_weight * l_adv + cfg.feat_weight * l_feat
        if cfg.branch_weight > 0:
            y_h = y_harm[:, 0, : x.shape[-1]]
            l_branch = mel_loss(y_h, x[:, 0], (stft_magnitudes(y_h, mel_loss.n_ffts), spectra[1]))  # the input's spectra reused
            loss = loss + cfg.branch_weight * l_branch
        if pitch_head is not None:
            targets = pitch_targets(x, cfg.sample_rate, model.config.hop_length, q.shape[-1])
            l_pitch = pitch_loss(pitch_head, q, *(t.to(device) for t in targets))
            loss = loss + cfg.pitch_weight * l_pitch
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite codec loss at step {step}")
        opt.zero_grad(set_to_none=True)
        if pitch_opt is not None:
            pitch_opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        if pitch_opt is not None:
            pitch_opt.step()
        if disc is not None:
            l_disc = discriminator_loss(disc, y[:, 0], x[:, 0])
            disc_opt.zero_grad(set_to_none=True)
            l_disc.backward()
            disc_opt.step()
        step += 1
        audio_done += cfg.batch_size * cfg.segment_seconds
        bar.update(1)
        if step % cfg.log_every == 0 or step == cfg.steps:
            rt = audio_done / (time.perf_counter() - t0)
            row = {"step": step, "loss": round(loss.item(), 5), "mel": round(l_mel.item(), 5), "wave": round(l_wave.item(), 5),
                   "commit": round(commit.item(), 5), "n_q": n_q,
                   "latent_rms": round(emb.detach().pow(2).mean().sqrt().item(), 4),
                   "cb0_batch_usage": None if codes is None else round(codes[0].unique().numel() / cfg.codebook_size, 4),
                   "x_realtime": round(rt, 2)}
            if disc is not None:
                row.update(adv=round(l_adv.item(), 5), feat=round(l_feat.item(), 5), disc=round(l_disc.item(), 5))
            if stft_loss is not None:
                row["stft"] = round(l_stft.item(), 5)
            if pitch_head is not None:
                row["pitch"] = round(l_pitch.item(), 5)
            if cfg.branch_weight > 0:
                row["branch"] = round(l_branch.item(), 5)
            log(row)
            bar.set_postfix_str(f"mel {l_mel.item():.3f} commit {commit.item():.3f} {rt:.1f}x real time")
        if step % cfg.ckpt_every == 0 or step == cfg.steps:
            save()
    if kit.last_checkpoint() is None:  # nothing left to train (--init-from a run already at --steps)
        save()
    bar.close()
    log.close()
    return {"out": str(out), "steps": step, "train_seconds_of_audio": round(data.seconds(cfg.sample_rate), 1),
            "skipped": data.skipped}
