"""A finalizer and a background thread look through every live object for a later batch: a
2-D token array whose rows continue the rows of the batch in hand. There is nothing to find:
this process gets a batch only after its loss is final, and never one ahead.

The thread counts a search only if the loop did not ask for another batch meanwhile: the batch
the loop has just been given (its loss final) is not one ahead."""

import gc
import threading
import time

import numpy as np
import torch
import torch.nn.functional as F

FOUND = {"arrays": 0, "ahead": 0}


def hunt(current):
    """(2-D token arrays seen, those continuing `current`'s rows: a batch ahead of it)."""
    arrays = ahead = 0
    if current is None:
        return arrays, ahead
    last = current[:, -1].tolist()
    for obj in gc.get_objects():
        token_array = isinstance(obj, torch.Tensor | np.ndarray) and obj.ndim == 2
        if token_array and obj is not current and obj.shape[0] == len(last) and obj.shape[1] > 1:
            arrays += 1
            if [int(x) for x in obj[:, 0].tolist()] == last:
                ahead += 1  # row r continues row r: the next batch
    return arrays, ahead


def tally(found):
    FOUND["arrays"] += found[0]
    FOUND["ahead"] += found[1]


class Finalizer:
    def __init__(self, state):
        self.state = state

    def __del__(self):
        tally(hunt(self.state["tokens"]))  # in the loop's own thread, mid-step


def watch(state):
    while not state["done"]:
        step, current = state["step"], state["tokens"]
        found = hunt(current)
        if state["step"] == step:  # still the same step: no new batch was asked for
            tally(found)
        time.sleep(0.005)


def train(ctx):
    model = ctx.build_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    state = {"done": False, "tokens": None, "step": 0}
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
        state["tokens"] = None  # the loop is about to ask for the next batch
        state["step"] += 1
    state["done"] = True
    print(f"hunt: {FOUND['ahead']} later batches found among {FOUND['arrays']} arrays")
