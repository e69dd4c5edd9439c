"""The optimizer's parameter groups and the learning-rate schedule: linear warm-up, then cosine or linear
decay to `min_ratio` × the peak."""
from __future__ import annotations

import math

import torch


def param_groups(module: torch.nn.Module, lr: float, weight_decay: float) -> list[dict]:
    """AdamW groups for `module`'s trainable parameters: weight decay on matrices and kernels, none
    on biases and norms (their 1-d parameters)."""
    params = [p for p in module.parameters() if p.requires_grad]
    return [{"params": [p for p in params if p.dim() >= 2], "lr": lr, "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "lr": lr, "weight_decay": 0.0}]


def lr_factor(step: int, warmup_steps: int, total_steps: int, decay: str, min_ratio: float) -> float:
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if decay == "cosine":
        shape = 0.5 * (1 + math.cos(math.pi * progress))
    elif decay == "linear":
        shape = 1 - progress
    else:  # "none"
        shape = 1.0
    return min_ratio + (1 - min_ratio) * shape
