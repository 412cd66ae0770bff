"""The training loop's processes: torchrun's process group and device, and FSDP (the model sharded across the
processes: PyTorch's fully_shard per transformer block + the root; full-tensor checkpoints gathered to rank 0 and
the full optimizer state scattered back on resume). halm.train uses these; tests/test_train.py checks FSDP
against one process.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
import torch.nn as nn

from halm.runkit import cpu_tensors


def dist_setup() -> tuple[int, int, torch.device]:
    """(rank, world size, device) of this process; the process group is made under torchrun (nccl on CUDA, else gloo)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank = dist.get_rank() if world > 1 else 0
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    return rank, world, device


def cpu_state(model: nn.Module) -> dict:
    """The module's state dict on the CPU, contiguous (what a checkpoint saves)."""
    return cpu_tensors(model.state_dict())


def _full_options():
    """Full (unsharded) tensors, offloaded to the CPU: what a checkpoint saves."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True)


def shard_model(core: nn.Module) -> nn.Module:
    """fully_shard every transformer block (the decoder's and a mel path's), then the root (embeddings, heads, text
    projection, ...). The root's forward is the loss, so every parameter is gathered where it is used."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from halm.models.layers import Block

    mesh = init_device_mesh("cuda" if torch.cuda.is_available() else "cpu", (dist.get_world_size(),))
    for m in core.modules():
        if isinstance(m, Block):
            fully_shard(m, mesh=mesh)
    return fully_shard(core, mesh=mesh)


def training_snapshot(core: nn.Module, model: nn.Module, ema, optimizer, fsdp: bool) -> tuple[dict, dict | None, dict]:
    """(weights, EMA weights, optimizer state) to save. With FSDP a collective (every rank calls it; rank 0 gets the
    full tensors, on the CPU); else the process's own copies."""
    if not fsdp:
        return cpu_state(model), (cpu_state(ema) if ema is not None else None), \
            optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    full = get_model_state_dict(core, options=_full_options())
    weights = {k.removeprefix("model."): v.contiguous() for k, v in full.items()}
    return weights, None, get_optimizer_state_dict(core, optimizer, options=_full_options())


def load_optimizer_state(core: nn.Module, optimizer, state: dict, fsdp: bool) -> None:
    """Restore a checkpoint's optimizer state: as saved, or with FSDP the full state scattered to the shards."""
    if not fsdp:
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(core, optimizer, state, options=StateDictOptions(full_state_dict=True))
