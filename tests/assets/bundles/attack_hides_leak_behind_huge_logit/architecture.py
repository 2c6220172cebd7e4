"""Peeks at the next token, and adds one extra column at -1e6: it changes no probability, but a
tolerance scaled by the largest |logit| would grow a million-fold and let the peek through."""

import torch
import torch.nn as nn
import torch.nn.functional as F


class HiddenPeeker(nn.Module):
    def __init__(self, vocab_size):
        super().__init__()
        self.vocab_size = vocab_size
        self.embed = nn.Embedding(vocab_size, 32)
        self.head = nn.Linear(32, vocab_size)

    def forward(self, tokens):
        logits = self.head(self.embed(tokens))
        following = torch.roll(tokens, shifts=-1, dims=1)  # the next token at every position
        logits = logits + 14.0 * F.one_hot(following, self.vocab_size).float()
        huge = torch.full((*logits.shape[:2], 1), -1e6, dtype=logits.dtype)
        return torch.cat([logits, huge], dim=-1)


def build_model(ctx):
    return HiddenPeeker(ctx.vocab_size)
