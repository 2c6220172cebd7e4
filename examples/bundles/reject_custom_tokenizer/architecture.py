import torch.nn as nn


class Bigram(nn.Module):
    """Each position predicts the next token from its own token only: causal by construction."""

    def __init__(self, vocab_size):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, 32)
        self.head = nn.Linear(32, vocab_size)

    def forward(self, tokens):
        return self.head(self.embed(tokens))  # (batch, seq, vocab)


def build_model(ctx):
    return Bigram(ctx.vocab_size)
