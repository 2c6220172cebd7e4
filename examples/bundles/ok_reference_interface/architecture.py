"""Written against the reference challenge's interface, unchanged."""

import torch.nn as nn
from prism_challenge.evaluator.interface import PrismContext


class Recurrent(nn.Module):
    """A GRU language model: causal because the recurrence only runs forward."""

    def __init__(self, vocab_size: int, width: int = 64):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, width)
        self.rnn = nn.GRU(width, width, batch_first=True)
        self.head = nn.Linear(width, vocab_size)

    def forward(self, tokens):
        hidden, _ = self.rnn(self.embed(tokens))  # (batch, seq, width)
        return self.head(hidden)  # (batch, seq, vocab)


def build_model(ctx: PrismContext) -> nn.Module:
    return Recurrent(ctx.vocab_size)
