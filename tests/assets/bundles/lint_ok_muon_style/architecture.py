"""A plain decoder for the Muon-style loop: Muon for the matrices, AdamW for the rest."""

import torch.nn as nn
import torch.nn.functional as F


class Decoder(nn.Module):
    def __init__(self, vocab_size: int, width: int = 64) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, width)
        self.mix = nn.GRU(width, width, batch_first=True)
        self.proj = nn.Linear(width, width, bias=False)
        self.head = nn.Linear(width, vocab_size, bias=False)

    def forward(self, tokens):
        hidden, _ = self.mix(self.embed(tokens))
        return self.head(F.relu(self.proj(hidden)))


def build_model(ctx):
    return Decoder(ctx.vocab_size)
