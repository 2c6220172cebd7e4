"""A small model that smuggles 160M floats in a buffer (buffers count toward the cap)."""

import torch
import torch.nn as nn


class Smuggler(nn.Module):
    def __init__(self, vocab_size):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, 32)
        self.head = nn.Linear(32, vocab_size)
        self.register_buffer("table", torch.zeros(160_000_000))

    def forward(self, tokens):
        return self.head(self.embed(tokens))


def build_model(ctx):
    return Smuggler(ctx.vocab_size)
