"""Honest code that needs fork and shared memory: DataLoader workers re-batch the scored rows."""

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset


def train(ctx):
    model = ctx.build_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    for batch in ctx.iter_train_batches(model, batch_size=8, seq_len=64):
        loader = DataLoader(TensorDataset(batch.tokens), batch_size=4, num_workers=2)
        for (rows,) in loader:
            logits = model(rows[:, :-1])
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), rows[:, 1:].reshape(-1))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
