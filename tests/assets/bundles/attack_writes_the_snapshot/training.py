"""An honest loop in the reference's style: logits of `batch.tokens`, positions predict the next."""

import torch
import torch.nn.functional as F


def train(ctx):
    model = ctx.build_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for batch in ctx.iter_train_batches(model, batch_size=8, seq_len=64):
        tokens = batch.tokens
        logits = model(tokens)
        loss = F.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1)
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
