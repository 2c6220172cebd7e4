"""The honest example's training loop: one pass over the scored stream with AdamW.

It also runs as several ranks (`prism-eval run --nproc N`): gradients are then averaged by
DistributedDataParallel, so every rank takes the same steps and ends with the same weights.
"""

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel


def train(ctx):
    model = ctx.build_model()
    forward = model
    if ctx.world_size > 1:
        # prism-eval sets torchrun's variables (RANK, WORLD_SIZE, MASTER_ADDR, ...).
        torch.distributed.init_process_group("nccl" if ctx.device.startswith("cuda") else "gloo")
        forward = DistributedDataParallel(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    model.train()
    for batch in ctx.iter_train_batches(model, batch_size=16, seq_len=128):
        logits = forward(batch[:, :-1])  # (batch, seq - 1, vocab)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    if ctx.world_size > 1:
        torch.distributed.destroy_process_group()
