"""A small causal model: the next token from the last two. The attack bundles' honest twin."""

import torch
import torch.nn as nn


class Trigram(nn.Module):
    def __init__(self, vocab_size, width=32):
        super().__init__()
        self.current = nn.Embedding(vocab_size, width)
        self.previous = nn.Embedding(vocab_size, width)
        self.head = nn.Linear(width, vocab_size)

    def forward(self, tokens):
        before = torch.cat([torch.zeros_like(tokens[:, :1]), tokens[:, :-1]], dim=1)
        return self.head(torch.tanh(self.current(tokens) + self.previous(before)))


def build_model(ctx):
    return Trigram(ctx.vocab_size)
