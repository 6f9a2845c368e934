"""What a training run optimises with: its processes (one, or torchrun's), AdamW with weight decay
on matrices only, and the learning-rate schedule (linear warm-up, then cosine decay).
"""

from __future__ import annotations

import math
import os

import torch
import torch.distributed as dist

from rnncap.engine.train_config import TrainConfig


def dist_setup(cfg: TrainConfig):
    """(rank, world, device) from torchrun's environment, or a single process."""
    from rnncap.utils.device import resolve_device

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        use_cuda = cfg.device != "cpu" and torch.cuda.is_available()
        dist.init_process_group("nccl" if use_cuda else "gloo")
        device = torch.device("cuda", local) if use_cuda else torch.device("cpu")
        if use_cuda:
            torch.cuda.set_device(device)
        return rank, world, device
    return 0, 1, resolve_device(cfg.device)


def lr_lambda(cfg: TrainConfig, total_steps: int):
    def f(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps))
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return f


def optimizer(cfg: TrainConfig, model: torch.nn.Module) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices only (not on biases, gains or the word embedding)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.dim() < 2 or name.startswith("embed") else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr)
