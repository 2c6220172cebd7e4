"""A finalizer and a background thread look through every live object for a later batch: a
2-D token array whose rows continue the rows of the batch in hand. There is nothing to find:
this process gets a batch only after its loss is final, and never one ahead."""

import gc
import threading
import time

import numpy as np
import torch
import torch.nn.functional as F

FOUND = {"arrays": 0, "ahead": 0}


def hunt(current):
    if current is None:
        return
    last = current[:, -1].tolist()
    for obj in gc.get_objects():
        token_array = isinstance(obj, torch.Tensor | np.ndarray) and obj.ndim == 2
        if token_array and obj is not current and obj.shape[0] == len(last) and obj.shape[1] > 1:
            FOUND["arrays"] += 1
            if [int(x) for x in obj[:, 0].tolist()] == last:
                FOUND["ahead"] += 1  # row r continues row r: the next batch


class Finalizer:
    def __init__(self, state):
        self.state = state

    def __del__(self):
        hunt(self.state["tokens"])


def watch(state):
    while not state["done"]:
        hunt(state["tokens"])
        time.sleep(0.005)


def train(ctx):
    model = ctx.build_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    state = {"done": False, "tokens": None}
    threading.Thread(target=watch, args=(state,), daemon=True).start()
    for batch in ctx.iter_train_batches(model, batch_size=8, seq_len=64):
        tokens = batch.tokens
        state["tokens"] = tokens
        Finalizer(state)  # collected at once
        logits = model(tokens)
        loss = F.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1)
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    state["done"] = True
    print(f"hunt: {FOUND['ahead']} later batches found among {FOUND['arrays']} arrays")
