import torch.nn as nn


class Narrow(nn.Module):
    """Predicts over 100 classes only: probability mass for the rest of the vocabulary is lost."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(300, 32)
        self.head = nn.Linear(32, 100)

    def forward(self, tokens):
        return self.head(self.embed(tokens))


def build_model(ctx):
    return Narrow()
