"""Returns NaN logits."""

import torch.nn as nn


class NotANumber(nn.Module):
    def __init__(self, vocab_size):
        super().__init__()
        self.head = nn.Embedding(vocab_size, vocab_size)

    def forward(self, tokens):
        return self.head(tokens) * float("nan")


def build_model(ctx):
    return NotANumber(ctx.vocab_size)
