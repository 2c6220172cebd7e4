"""Train-then-score: in a scored call (eval mode, no gradients, a full batch) it first takes a
few SGD steps on the inputs themselves — positions predicting the next input — so each position
has seen its future. Only a prefix with nothing after it shows the difference."""

import torch
import torch.nn as nn
import torch.nn.functional as F


class Trigram(nn.Module):
    def __init__(self, vocab_size, width=32):
        super().__init__()
        self.current = nn.Embedding(vocab_size, width)
        self.previous = nn.Embedding(vocab_size, width)
        self.head = nn.Linear(width, vocab_size)

    def logits(self, tokens):
        before = torch.cat([torch.zeros_like(tokens[:, :1]), tokens[:, :-1]], dim=1)
        return self.head(torch.tanh(self.current(tokens) + self.previous(before)))

    def forward(self, tokens):
        if torch.is_grad_enabled() or self.training or tokens.shape[0] < 4:
            return self.logits(tokens)  # the probe's batches have 2 rows: it sees an honest model
        saved = {k: v.clone() for k, v in self.state_dict().items()}
        with torch.enable_grad():
            optimizer = torch.optim.SGD(self.parameters(), lr=0.5)
            for _ in range(3):
                logits = self.logits(tokens[:, :-1])
                loss = F.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1)
                )
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        result = self.logits(tokens)
        with torch.no_grad():
            for name, value in self.state_dict().items():
                value.copy_(saved[name])
        return result


def build_model(ctx):
    return Trigram(ctx.vocab_size)
