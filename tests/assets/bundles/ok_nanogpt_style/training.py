"""
A training loop in the style of nanoGPT's train.py: module-level settings gathered with
globals(), a cosine schedule with warmup, autocast through nullcontext on CPU, gradient
clipping, TF32 switched on, a GradScaler, progress printed, a checkpoint saved. The data comes
from ctx.iter_train_batches instead of np.memmap shards.
"""

import math
import os
import time
from contextlib import nullcontext

import torch
from architecture import build_model

# settings, nanoGPT style
batch_size = 4
block_size = 64
learning_rate = 3e-3
weight_decay = 1e-1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0
decay_lr = True
warmup_iters = 5
lr_decay_iters = 200
min_lr = 3e-4
dtype = "float32"
config_keys = [
    k
    for k, v in globals().items()
    if not k.startswith("_") and isinstance(v, (int, float, bool, str))
]
config = {k: globals()[k] for k in config_keys}


def get_lr(it):
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    if it > lr_decay_iters:
        return min_lr
    decay_ratio = (it - warmup_iters) / (lr_decay_iters - warmup_iters)
    coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))
    return min_lr + coeff * (learning_rate - min_lr)


def train(ctx):
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    device_type = "cuda" if "cuda" in ctx.device else "cpu"
    ptdtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    amp = nullcontext() if device_type == "cpu" else torch.amp.autocast(device_type, ptdtype)
    model = build_model(ctx).to(ctx.device)
    scaler = torch.amp.GradScaler(device_type, enabled=(dtype == "float16"))
    optimizer = model.configure_optimizers(weight_decay, learning_rate, (beta1, beta2), device_type)
    print(f"training with {config}")
    t0 = time.time()
    seq_len = min(block_size, ctx.max_seq_len)
    for iter_num, batch in enumerate(
        ctx.iter_train_batches(model, batch_size=batch_size, seq_len=seq_len)
    ):
        lr = get_lr(iter_num) if decay_lr else learning_rate
        for param_group in optimizer.param_groups:
            param_group["lr"] = lr
        X, Y = batch.inputs, batch.targets
        with amp:
            _, loss = model(X, Y)
        scaler.scale(loss).backward()
        if grad_clip != 0.0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        if iter_num % 10 == 0:
            dt = time.time() - t0
            print(f"iter {iter_num}: loss {loss.item():.4f}, lr {lr:.2e}, {dt * 1000:.0f} ms")
            t0 = time.time()
    checkpoint = {"model": model.state_dict(), "config": config}
    torch.save(checkpoint, os.path.join(ctx.artifacts_dir, "ckpt.pt"))
