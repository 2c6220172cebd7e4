# A GRU language model built by create(ctx): causal because the recurrence runs forward only.
from torch import nn

ARCHITECTURE_NAME = "GRU\tbyte model \u202e(paths)"


class Recurrent(nn.Module):
    def __init__(self, vocab_size: int, width: int = 64) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, width)
        self.rnn = nn.GRU(width, width, batch_first=True)
        self.head = nn.Linear(width, vocab_size)

    def forward(self, tokens):
        hidden, _ = self.rnn(self.embed(tokens))
        return self.head(hidden)


def create(ctx):
    return Recurrent(ctx.vocab_size)
