"""A plain training loop: AdamW over the supervisor's stream of batches."""

import torch
import torch.nn.functional as F


def train(ctx):
    """Train on every batch the supervisor hands out, once."""
    model = ctx.build_model().to(ctx.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4)
    model.train()
    for batch in ctx.iter_train_batches(model, batch_size=8, seq_len=64):
        batch = batch.to(ctx.device)  # (B, T + 1)
        logits = model(batch[:, :-1])  # (B, T, V)
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), batch[:, 1:].reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
