"""The one training loop of halm, for every model family.

    halm train --preset P --data DATA --out RUN [--steps N] [--set key=value ...]
    torchrun --nproc_per_node N -m halm train ...        (DDP; rank 0 alone writes)

Data: random crops from the train split, read from the memory-mapped dataset.
- gpt / whisper_gpt: crops of context+1 coarse tokens from the concatenation of the split's items (a
  crop may cross from one clip into the next, as in text LM pre-training; evaluation never crosses,
  see halm.metrics.lm).
- t2a: crops of the model's frames (K codebooks) inside one item, with that item's caption; items are
  drawn in proportion to their length; shorter items are padded and their padding is never a target.
  The CFG decision (null condition or not) is drawn with the crops.
The crops of a step are drawn for the *global* batch from one generator seeded by `seed`, and rank i
takes its slice, so N processes see exactly the batch one process would.

Run directory:
    config.json             family, model config, train config, the dataset's codec and mel settings
    checkpoint/             model.safetensors, ema.safetensors (if ema_decay > 0), state.pt
                            (optimizer, step, RNG and data-position state; loads with weights_only=True);
                            replaced atomically (written to checkpoint.tmp/, then renamed)
    metrics.jsonl           one JSON object per log line (train) and per validation; `tokens` and
                            `tokens_per_s` count sequence positions (batch x context): for t2a these
                            are pattern steps, each holding up to K codes
    tb/                     TensorBoard event files
Re-running the same command resumes from checkpoint/ and continues the same trajectory.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from tqdm import tqdm

from halm import __version__
from halm.checkpoint import atomic_write_text, file_sha256
from halm.config import apply_overrides
from halm.errors import TrainingDiverged, UserError
from halm.parallel import dist_setup, load_optimizer_state, shard_model, training_snapshot
from halm.runkit import RunMismatch, TrainingRun, warmup_cosine
from halm.runs import read_run_config

# TrainConfig fields that say how a run executes, not what it trains: a resume may change them
RUN_SETTINGS = ("train.steps", "train.threads", "train.log_every", "train.ckpt_every", "train.checkpoint_activations")


@dataclass
class TrainConfig:
    steps: int = 2000
    batch_size: int = 16  # sequences per optimizer step, across all processes and accumulation steps
    accum: int = 1  # gradient accumulation: each process does `accum` micro-batches per step
    lr: float = 1e-3
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 100
    weight_decay: float = 0.1  # on weight matrices only (not on norms, biases or embeddings)
    betas: tuple = (0.9, 0.95)
    grad_clip: float = 1.0
    ema_decay: float = 0.0  # > 0 keeps an EMA of the weights (saved as ema.safetensors)
    # "auto": bf16 autocast where the hardware has bf16 arithmetic (CUDA GPUs that support it, CPUs with
    # avx512_bf16 / AMX), else fp32; "bf16" forces autocast (on a CPU without bf16 units it is emulated:
    # 2-3x slower than fp32, measured on an avx512f-only Xeon); "none": fp32
    amp: str = "auto"
    eval_every: int = 200
    eval_tokens: int = 20000  # dev-split targets scored at each validation (0 = all)
    log_every: int = 10
    ckpt_every: int = 200
    seed: int = 0
    threads: int = 0  # torch CPU threads per process (0 = torch's default)
    # Under torchrun: shard parameters, gradients and optimizer state across the processes (PyTorch's FSDP2
    # `fully_shard`, one unit per transformer block + the rest) instead of DDP's full copy per process
    fsdp: bool = False
    checkpoint_activations: bool = False  # recompute each block's activations in the backward (less memory)

    def __post_init__(self):
        if self.amp not in ("auto", "bf16", "none"):
            raise UserError(f"amp must be 'auto', 'bf16' or 'none', got {self.amp!r}")
        if self.fsdp and self.ema_decay > 0:
            raise UserError("ema_decay with fsdp=true is not supported (the EMA copy would not be sharded)")
        if self.batch_size < 1 or self.accum < 1 or self.steps < 0:
            raise UserError("batch_size and accum must be >= 1 and steps >= 0")
        small = [f"{k}={getattr(self, k)}" for k in ("eval_every", "log_every", "ckpt_every") if getattr(self, k) < 1]
        if small:  # (a run without validation: a dataset without a dev split, or eval_every above steps)
            raise UserError(f"{', '.join(small)}: intervals are steps and must be >= 1")
        if not 0 <= self.ema_decay < 1:
            raise UserError(f"ema_decay must be in [0, 1) (0 = no EMA), got {self.ema_decay}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d


def _diverged(step: int, what: str, ids: list[list[str]], run: Path, has_checkpoint: bool) -> TrainingDiverged:
    return TrainingDiverged(f"step {step}: {what}; items in this process's batch: "
                            f"{sorted({i for row in ids for i in row})[:20]}. Lower --set lr=… or check those items; "
                            + (f"the last good checkpoint is in {run}/checkpoint" if has_checkpoint
                               else "no checkpoint was written yet"))


# ---- data ---------------------------------------------------------------------------------------
class _SeededSampler:
    """A crop sampler's whole state is its numpy generator (saved in checkpoints as a JSON string)."""

    rng: np.random.Generator

    def state(self) -> str:
        return json.dumps(self.rng.bit_generator.state)

    def set_state(self, s: str):
        self.rng.bit_generator.state = json.loads(s)


class CropSampler(_SeededSampler):
    """Random crops of `length` steps from the concatenated items of one split.

    Returns tokens (b, length) int64 from codebook 0, mel (b, length, r, M) float32 if asked, and the
    ids of the items each crop touches. State = the numpy generator's state (saved in checkpoints).
    """

    def __init__(self, dataset, length: int, seed: int, with_mel: bool):
        self.ds, self.crop, self.with_mel = dataset, length, with_mel
        self.item_frames = dataset.frames
        self.starts = np.concatenate([[0], np.cumsum(self.item_frames)])
        self.total = int(self.starts[-1])
        if self.total < length:
            raise UserError(f"the train split has {self.total} frames, fewer than one crop of {length}; "
                             "use a smaller context or more data")
        self.rng = np.random.default_rng(seed)

    def draw(self, n: int) -> np.ndarray:
        return self.rng.integers(0, self.total - self.crop + 1, size=n)

    def read(self, positions) -> dict:
        tokens = np.empty((len(positions), self.crop), dtype=np.int64)
        mel = None
        ids = []
        for b, g in enumerate(positions):
            i, got, row_ids = int(np.searchsorted(self.starts, g, side="right") - 1), 0, []
            off = int(g - self.starts[i])
            while got < self.crop:
                item = self.ds[i]
                n = min(self.crop - got, item.codes.shape[1] - off)
                tokens[b, got:got + n] = item.codes[0, off:off + n]
                if self.with_mel:
                    if mel is None:
                        mel = np.empty((len(positions), self.crop) + item.mel.shape[1:], dtype=np.float32)
                    mel[b, got:got + n] = item.mel[off:off + n]
                row_ids.append(item.id)
                got, off, i = got + n, 0, i + 1
            ids.append(row_ids)
        batch = {"tokens": torch.from_numpy(tokens), "ids": ids}
        if mel is not None:
            batch["mel"] = torch.from_numpy(mel)
        return batch



class ItemCropSampler(_SeededSampler):
    """Crops of `crop_frames` frames (n_q codebooks) inside one item, with its caption (text-conditioned LMs);
    items are drawn in proportion to their length (`item_frames`), shorter items are padded.

    draw(n) -> (n, 3) int64 rows [item, start, drop]; read(rows) -> codes (b, K, crop_frames) int64, lengths (b,),
    text_emb (b, L, Dt), text_mask (b, L), drop (b,) bool, [mel (b, crop_frames, r, M)], ids.
    """

    def __init__(self, dataset, crop_frames: int, n_q: int, seed: int, with_mel: bool, captions, cfg_dropout: float,
                 cfg_mode: str, need_text: bool = True):
        self.ds, self.crop, self.n_q, self.with_mel = dataset, crop_frames, n_q, with_mel
        self.captions, self.cfg_dropout, self.cfg_mode = captions, cfg_dropout, cfg_mode
        self.item_frames = dataset.frames
        missing = [dataset[i].id for i in range(len(dataset)) if need_text and not (dataset[i].text or "").strip()]
        if missing:
            raise UserError(f"{len(missing)} train items have no caption (e.g. {missing[:3]}); a text-to-audio "
                             "model needs text for every item (prepare with --require-text to skip the others)")
        self.p = self.item_frames / self.item_frames.sum()
        self.rng = np.random.default_rng(seed)

    def draw(self, n: int) -> np.ndarray:
        items = self.rng.choice(len(self.item_frames), size=n, p=self.p)
        starts = self.rng.integers(0, np.maximum(self.item_frames[items] - self.crop, 0) + 1)
        if self.cfg_mode == "batch":
            drop = np.full(n, self.rng.random() < self.cfg_dropout)
        else:
            drop = self.rng.random(n) < self.cfg_dropout
        return np.stack([items, starts, drop.astype(np.int64)], axis=1)

    def read(self, rows) -> dict:
        b = len(rows)
        codes = np.zeros((b, self.n_q, self.crop), dtype=np.int64)
        lengths = np.zeros(b, dtype=np.int64)
        mel, ids, texts = None, [], []
        for j, (i, start, _) in enumerate(rows):
            item = self.ds[int(i)]
            n = min(self.crop, item.codes.shape[1] - int(start))
            codes[j, :, :n] = item.codes[: self.n_q, start:start + n]
            lengths[j] = n
            if self.with_mel:
                if mel is None:
                    mel = np.zeros((b, self.crop) + item.mel.shape[1:], dtype=np.float32)
                mel[j, :n] = item.mel[start:start + n]
            ids.append([item.id])
            texts.append(item.text)
        text_emb, text_mask = self.captions.batch(texts)
        batch = {"codes": torch.from_numpy(codes), "lengths": torch.from_numpy(lengths), "text_emb": text_emb,
                 "text_mask": text_mask, "drop": torch.from_numpy(np.asarray(rows)[:, 2].astype(bool)), "ids": ids}
        if mel is not None:
            batch["mel"] = torch.from_numpy(mel)
        return batch



def precision_for(amp: str, device: torch.device) -> str:
    """What a run trains in for its `amp` setting on this device: 'bf16' (autocast) or 'fp32'."""
    return "bf16" if amp == "bf16" or (amp == "auto" and has_native_bf16(device)) else "fp32"


def has_native_bf16(device: torch.device) -> bool:
    """Whether bf16 autocast runs on bf16 hardware here (else it is emulated and slower than fp32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


# ---- optimisation -------------------------------------------------------------------------------
def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices of Linear layers only; none on norms, biases and embeddings."""
    decay, no_decay = [], []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            (decay if isinstance(module, nn.Linear) and name == "weight" else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up over warmup_steps, then cosine from lr to lr * min_lr_ratio at `steps` (the run kit's)."""
    return warmup_cosine(step, cfg.lr, cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio)


class _LossModule(nn.Module):
    """DDP wraps a module's forward; the families' loss(batch) goes through this."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, batch):
        return self.model.loss(batch)


# ---- the loop -----------------------------------------------------------------------------------
def train(preset: str | None, data: str, out: str, steps: int | None = None, overrides: list[str] | None = None,
          progress: bool = True, init_from: str | None = None) -> dict:
    """Train (or resume) a run; returns a summary dict. Overrides may name model or train fields.

    init_from: start from another run's weights and model settings (fine-tuning, e.g. an imported MusicGen;
    preset None) instead of a preset's random init. The data must be tokenized with that run's codec. The
    weights (model.safetensors: the trained weights, not an EMA copy) are read once, when `out` has no
    checkpoint yet; resuming continues from `out`'s own.

    The run folder is locked while training (rank 0 holds RUN/.lock): a second process on it is refused."""
    with TrainingRun(out, rank=int(os.environ.get("RANK", "0"))) as kit:
        return _train(kit, preset, data, steps, overrides, progress, init_from)


def _train(kit: TrainingRun, preset: str | None, data: str, steps: int | None, overrides: list[str] | None,
           progress: bool, init_from: str | None = None) -> dict:
    from halm.data import open_dataset
    from halm.metrics.lm import evaluate_lm, evaluate_t2a
    from halm.models import build_model, config_from_dict, count_params, preset_config

    overrides = list(overrides or [])
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    t_over = [o for o in overrides if o.partition("=")[0].strip().replace("-", "_") in train_fields]
    m_over = [o for o in overrides if o not in t_over]
    init = None
    if init_from is not None:
        if preset is not None:
            raise UserError("--init-from takes the model settings of that run: give no --preset")
        from halm.runs import resolve_run, weights_dir

        init_rc = read_run_config(init_from)
        init_dir = weights_dir(init_from, init_rc)
        if init_dir is None:
            raise FileNotFoundError(f"--init-from {init_from}: no weights in {resolve_run(init_from) / 'checkpoint'}")
        family, preset = init_rc["family"], init_rc.get("preset", init_rc["family"])
        mcfg = apply_overrides(config_from_dict(family, init_rc["model"]), m_over)
        init = {"run": str(resolve_run(init_from).resolve()),
                "weights_sha256": file_sha256(init_dir / "model.safetensors")}
    elif preset is None:
        raise UserError("give --preset NAME (a new model) or --init-from RUN (fine-tuning)")
    else:
        family, mcfg = preset_config(preset, m_over)
    tcfg = apply_overrides(TrainConfig(), t_over)
    if steps is not None:
        tcfg = dataclasses.replace(tcfg, steps=steps)
    steps_given = steps is not None or any(o.partition("=")[0].strip() == "steps" for o in t_over)

    rank, world, device = dist_setup()
    if tcfg.threads:
        torch.set_num_threads(tcfg.threads)
    if tcfg.batch_size % (world * tcfg.accum):
        raise UserError(f"batch_size {tcfg.batch_size} must be divisible by processes x accum = {world * tcfg.accum}")
    micro = tcfg.batch_size // (world * tcfg.accum)

    train_ds = open_dataset(data, "train")
    dev_ds = open_dataset(data, "dev")
    if len(train_ds) == 0:
        raise UserError(f"{data}: the train split is empty")
    if len(dev_ds) == 0 and rank == 0:
        print(f"halm train: warning: {data} has no dev split: training without validation (no val_nll, no RUN/best)",
              file=sys.stderr)
    if init is not None and train_ds.codec["weights_sha256"] != init_rc["data"]["codec"]["weights_sha256"]:
        raise UserError(f"{data} was tokenized with codec {train_ds.codec['name']}; --init-from {init_from} was trained "
                        f"with {init_rc['data']['codec']['name']}: prepare the data with --codec "
                        f"{init_rc['data']['codec']['name']}")
    if mcfg.vocab_size < int(train_ds.codec["codebook_size"]):
        raise UserError(f"model vocab {mcfg.vocab_size} < codebook size {train_ds.codec['codebook_size']} of {data}")
    if family == "t2a" and mcfg.n_q > train_ds.n_codebooks:
        raise UserError(f"the model wants {mcfg.n_q} codebooks; {data} has {train_ds.n_codebooks}")
    if getattr(mcfg, "n_mels", None) is not None and getattr(mcfg, "mel", True):
        mel = train_ds.mel_config
        if (mcfg.n_mels, mcfg.frames_per_token) != (mel.n_mels, mel.frames_per_token):
            raise UserError(f"model expects mel ({mcfg.frames_per_token} x {mcfg.n_mels}) but {data} has "
                             f"({mel.frames_per_token} x {mel.n_mels}); add --set n_mels=… frames_per_token=…")
    run = kit.folder
    run_config = {"halm_version": __version__, "preset": preset, "family": family, "model": mcfg.to_dict(),
                  "train": tcfg.to_dict(), "data": {"path": str(Path(data).resolve()), "codec": train_ds.codec,
                                                    "mel": train_ds.index["mel"],
                                                    "mel_source": train_ds.index.get("mel_source", "audio"),
                                                    "frame_rate": train_ds.frame_rate}}
    if init is not None:
        run_config["init_from"] = init
    if (run / "config.json").exists():
        old = read_run_config(run)
        if old.get("init_from") != run_config.get("init_from"):
            raise RunMismatch(f"{run} was started from {(old.get('init_from') or {}).get('run', 'a random init')}; "
                              f"this command starts from {(init or {}).get('run', 'a random init')}: choose a new --out")
        if not steps_given:  # a rerun without --steps resumes to the run's own length
            tcfg = dataclasses.replace(tcfg, steps=old["train"]["steps"])
            run_config["train"] = tcfg.to_dict()
    # a resume must match every setting but the length (a higher --steps extends a run; the new one is recorded)
    # and how the run executes (threads, logging and checkpoint intervals, activation recomputation)
    kit.settings(run_config, may_change=RUN_SETTINGS, skip=("halm_version", "preset", "init_from", "data.frame_rate"),
                 normalize=lambda old: {**old, "model": config_from_dict(old["family"], old["model"]).to_dict()})

    torch.manual_seed(tcfg.seed)
    model = build_model(family, mcfg).to(device)
    if init is not None and kit.last_checkpoint() is None:
        from halm.checkpoint import load_weights

        model.load_state_dict(load_weights(init_dir / "model.safetensors", f"restore {init_from}", device=str(device)))
    ema = copy.deepcopy(model).eval().requires_grad_(False) if tcfg.ema_decay > 0 else None
    if ema is not None and tcfg.ema_decay ** tcfg.steps > 0.05 and rank == 0:  # (no warm-up of the decay)
        print(f"halm train: warning: with ema_decay={tcfg.ema_decay} the EMA still holds "
              f"{100 * tcfg.ema_decay ** tcfg.steps:.0f}% of the initial weights after {tcfg.steps} steps, and "
              f"validation, best/ and inference use the EMA; use ema_decay <= {1 - 3 / max(tcfg.steps, 1):.4g} for "
              f"this length", file=sys.stderr)
    if tcfg.checkpoint_activations:
        from halm.models.layers import CausalStack

        for m in model.modules():
            if isinstance(m, CausalStack):
                m.checkpoint_blocks = True
    captions = None
    if family == "t2a":
        from halm.models.text import caption_batches, load_text_encoder

        encoder = load_text_encoder(mcfg.text_encoder, device=device, max_tokens=mcfg.text_max_tokens, dim=mcfg.text_dim)
        if encoder.dim != mcfg.text_dim:
            raise UserError(f"text encoder {mcfg.text_encoder} has width {encoder.dim}; add --set text_dim={encoder.dim}")
        captions = caption_batches(encoder)
        sampler = ItemCropSampler(train_ds, mcfg.frames, mcfg.n_q, tcfg.seed, model.uses_mel, captions,
                                  mcfg.cfg_dropout, mcfg.cfg_mode, need_text=mcfg.has_text)
    else:
        sampler = CropSampler(train_ds, mcfg.context + 1, tcfg.seed, with_mel=model.uses_mel)
    step, tokens_seen, elapsed_before = 0, 0, 0.0

    ck, st = kit.last_checkpoint(), None
    if ck is not None:
        weights, st = kit.load(ck, device)
        extra = sorted(set(weights["model"]) - set(model.state_dict()))
        if extra:  # e.g. a second stage saved with a head for its given codebook: the optimizer state does not fit
            raise UserError(f"{ck} holds weights this model no longer has ({', '.join(extra[:3])}; made by an older "
                            f"halm): its training state cannot be resumed. Continue from its weights with "
                            f"`halm train --init-from {run} --out NEW_RUN`")
        model.load_state_dict(weights["model"])
        if ema is not None:
            if "ema" not in weights:
                raise UserError(f"{ck} has no ema.safetensors: {run} was trained without EMA")
            ema.load_state_dict(weights["ema"])
        step, tokens_seen, elapsed_before = st["step"], st["tokens"], st["elapsed"]
        if step > tcfg.steps:
            raise UserError(f"{run} is at step {step}; --steps {tcfg.steps} would end it before that (give --steps >= "
                            f"{step} to extend it, or use another --out)")
        sampler.set_state(st["sampler"])
        torch.set_rng_state(st["torch_rng"].cpu())
        if device.type == "cuda" and "cuda_rng" in st:  # (dropout on a GPU draws from the device's generator)
            torch.cuda.set_rng_state(st["cuda_rng"].cpu(), device)

    n_params = count_params(model)
    core = _LossModule(model)
    fsdp = tcfg.fsdp and world > 1
    if fsdp:
        core = shard_model(core)
        if getattr(mcfg, "cfg_mode", None) == "sample":  # ranks drop different rows: one may not use the null
            core.set_reduce_scatter_unused_params(True)  # condition; all reduce it (zeros), as DDP's unused ones
    elif world > 1:
        core = nn.parallel.DistributedDataParallel(core, device_ids=[device.index] if device.type == "cuda" else None,
                                                   find_unused_parameters=getattr(model, "some_params_unused", False))
    optimizer = torch.optim.AdamW(param_groups(model, tcfg.weight_decay), lr=tcfg.lr, betas=tuple(tcfg.betas),
                                  fused=device.type == "cuda")  # after sharding: FSDP's parameters are the shards
    if st is not None:
        load_optimizer_state(core, optimizer, st["optimizer"], fsdp)
    use_bf16 = precision_for(tcfg.amp, device) == "bf16"
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if use_bf16 else contextlib.nullcontext()
    log = kit.metrics(step)  # metrics.jsonl + tb/ (rank 0), rows an interrupted run logged after `step` dropped

    def validate() -> dict:
        if len(dev_ds) == 0:
            return {}
        was_training = model.training
        net = ema if ema is not None else model
        if fsdp:  # the root's shards gathered for the evaluation (the blocks gather their own in their forward)
            core.unshard()
        # DDP: each rank scores its share of the dev batches and the sums are all-reduced (no rank waits for
        # another's whole evaluation); FSDP: every rank runs every batch, its blocks' forwards are collectives
        part = (0, 1) if fsdp else (rank, world)
        if family == "t2a":
            r = evaluate_t2a(net, dev_ds, captions, max_tokens=tcfg.eval_tokens or None, uncond=True, progress=False,
                             part=part)
        else:
            r = evaluate_lm(net, dev_ds, max_tokens=tcfg.eval_tokens or None, progress=False, part=part)
        if fsdp:
            core.reshard()
        model.train(was_training)
        out = {"val_nll": r["nll"], "val_acc": r["accuracy"], "val_ppl": r["ppl"]}
        if "nll_uncond" in r:
            out["val_nll_uncond"] = r["nll_uncond"]
        return out

    def loop_state() -> dict:  # what a resume needs besides the weights and the optimizer
        return {"step": step, "tokens": tokens_seen, "elapsed": elapsed_before + time.perf_counter() - t_start,
                "sampler": sampler.state(), "torch_rng": torch.get_rng_state(),
                **({"cuda_rng": torch.cuda.get_rng_state(device)} if device.type == "cuda" else {})}

    def save(snapshot: tuple, root: Path | None = None):  # RUN/checkpoint (or RUN/best/checkpoint) as a whole
        weights, ema_weights, opt_state = snapshot
        kit.save({"model": weights, **({"ema": ema_weights} if ema_weights is not None else {})},
                 {**loop_state(), "optimizer": opt_state}, root)

    # RUN/best: a copy of the run (config.json + checkpoint/) at the step of the lowest dev NLL so far
    best_path = run / "best" / "best.json"
    best_nll = float("inf")
    if best_path.exists():
        from halm.checkpoint import read_json_file

        best_nll = float(read_json_file(best_path, "best-step record", f"remove {run / 'best'} (it is rewritten at "
                                        "the next improvement)").get("val_nll", float("inf")))

    pbar = tqdm(total=tcfg.steps, initial=step, desc=f"train {preset}", disable=not progress or rank != 0,
                dynamic_ncols=True)
    model.train()
    t_start, tokens_at_start = time.perf_counter(), tokens_seen
    window_t, window_tokens, sums, counts = time.perf_counter(), 0, {}, {}
    last_val = {}
    while step < tcfg.steps:
        lr = lr_at(step, tcfg)
        for g in optimizer.param_groups:
            g["lr"] = lr
        positions = sampler.draw(tcfg.batch_size)  # the global batch; this rank reads its slice
        mine = positions[rank * micro * tcfg.accum:(rank + 1) * micro * tcfg.accum]
        step_loss, step_acc, ids = torch.zeros((), device=device), torch.zeros((), device=device), []
        step_extra: dict[str, float] = {}  # family-specific scalars (rank 0's under DDP), mean over micro-batches
        for a in range(tcfg.accum):
            batch = sampler.read(mine[a * micro:(a + 1) * micro])
            ids += batch["ids"]
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items() if k != "ids"}
            sync = world == 1 or a == tcfg.accum - 1
            if fsdp:
                core.set_requires_gradient_sync(sync)
            with (contextlib.nullcontext() if sync or fsdp else core.no_sync()), autocast:
                loss, extra = core(batch)
            (loss / tcfg.accum).backward()
            step_loss += loss.detach() / tcfg.accum
            step_acc += extra["acc"].detach() / tcfg.accum
            for k, v in extra.items():
                if k != "acc":
                    step_extra.setdefault(k, []).append(float(v))
        if world > 1:
            stats = torch.stack([step_loss, step_acc])
            dist.all_reduce(stats)
            step_loss, step_acc = stats / world
        if not torch.isfinite(step_loss):
            raise _diverged(step + 1, f"loss is {step_loss.item()}", ids, run, kit.last_checkpoint() is not None)
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.grad_clip)
        if hasattr(grad_norm, "full_tensor"):  # FSDP: a DTensor
            grad_norm = grad_norm.full_tensor()
        if not torch.isfinite(grad_norm):  # a finite loss with an inf/NaN gradient: the step would write NaN weights
            raise _diverged(step + 1, f"the gradient norm is {grad_norm.item()} (the loss {step_loss.item():.4f})", ids,
                            run, kit.last_checkpoint() is not None)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            with torch.no_grad():
                for pe, pm in zip(ema.parameters(), model.parameters()):
                    pe.lerp_(pm, 1 - tcfg.ema_decay)
        step += 1
        n_tok = tcfg.batch_size * mcfg.context  # sequence positions (t2a: pattern steps of up to K codes each)
        tokens_seen += n_tok
        window_tokens += n_tok
        for k, v in [("loss", step_loss.item()), ("acc", step_acc.item())] + [
                (k, sum(v) / len(v)) for k, v in step_extra.items()]:
            sums[k] = sums.get(k, 0.0) + v
            counts[k] = counts.get(k, 0) + 1
        if step % tcfg.log_every == 0 or step == tcfg.steps:
            now = time.perf_counter()
            rate = window_tokens / max(now - window_t, 1e-9)
            means = {k: round(sums[k] / counts[k], 5) for k in sums}  # keys seen in the window (l_rr: CFG steps)
            rec = {"step": step, "tokens": tokens_seen, "loss": means.pop("loss"), "acc": means.pop("acc"),
                   "lr": lr, "grad_norm": round(float(grad_norm), 4), "tokens_per_s": round(rate, 1), **means}
            log(rec)
            pbar.set_postfix(loss=f"{rec['loss']:.3f}", tok_s=f"{rate:.0f}",
                             **({"val": f"{last_val['val_nll']:.3f}"} if last_val else {}))
            window_t, window_tokens, sums, counts = now, 0, {}, {}
        if step % tcfg.eval_every == 0 or step == tcfg.steps:
            last_val = validate()  # every rank takes part (DDP: a share of the batches; FSDP: all of them)
            if last_val and rank == 0:
                log({"step": step, "tokens": tokens_seen, **last_val})
            improved = bool(last_val) and last_val["val_nll"] < best_nll
            if world > 1:  # rank 0's decision for every rank (FSDP: the snapshot below is a collective)
                flag = torch.tensor([float(improved)], device=device)
                dist.broadcast(flag, src=0)
                improved = bool(flag.item())
            if improved:
                best_nll = last_val["val_nll"]
                if rank == 0 or fsdp:
                    snapshot = training_snapshot(core, model, ema, optimizer, fsdp)
                if rank == 0:
                    (run / "best").mkdir(exist_ok=True)
                    atomic_write_text(run / "best" / "config.json", (run / "config.json").read_text())
                    save(snapshot, run / "best")
                    atomic_write_text(best_path, json.dumps({"step": step, "val_nll": best_nll}) + "\n")
            if world > 1:
                dist.barrier()
        if step % tcfg.ckpt_every == 0 or step == tcfg.steps:
            if rank == 0 or fsdp:
                snapshot = training_snapshot(core, model, ema, optimizer, fsdp)
                if rank == 0:
                    save(snapshot)
            if world > 1:
                dist.barrier()
        pbar.update(1)
    pbar.close()
    log.close()
    new_tokens = tokens_seen - tokens_at_start
    dt = time.perf_counter() - t_start
    if world > 1:
        dist.barrier()
    return {"run": str(run), "preset": preset, "family": family, "params": n_params, "steps": step,
            "tokens": tokens_seen, "new_tokens": new_tokens, "precision": "bf16" if use_bf16 else "fp32",
            "tokens_per_s": round(new_tokens / dt, 1) if new_tokens else None, **last_val}

