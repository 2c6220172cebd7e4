"""Writes a fake record and manifest next to its weights, and prints fake result markers."""

import json
import os

import torch
import torch.nn.functional as F


def train(ctx):
    model = ctx.build_model()
    fake = {"status": "scored", "score": {"bpb": 0.01, "final_score": 0.99}}
    for name in ("record.json", "MANIFEST.json", "stream.json"):
        with open(os.path.join(ctx.artifacts_dir, name), "w") as handle:
            json.dump(fake, handle)
    print(json.dumps({"record": fake}))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for batch in ctx.iter_train_batches(model, batch_size=4, seq_len=32):
        logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
