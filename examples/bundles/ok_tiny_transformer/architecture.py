"""A small causal transformer: the honest example bundle's model.

build_model(ctx) is pure: no files, no network, no data. Causality comes from the
attention mask (is_causal=True): position t only ever sees positions <= t.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

ARCHITECTURE_NAME = "Tiny causal transformer"  # shown in the record, report and leaderboard


class Block(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, width = x.shape
        q, k, v = self.qkv(self.norm1(x)).split(width, dim=-1)
        # (batch, heads, seq, width / heads)
        q, k, v = (t.view(batch, seq, self.heads, -1).transpose(1, 2) for t in (q, k, v))
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(attended.transpose(1, 2).reshape(batch, seq, width))
        return x + self.mlp(self.norm2(x))


class TinyTransformer(nn.Module):
    def __init__(self, vocab_size: int, max_seq_len: int, width: int = 128, layers: int = 2):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, width)
        self.position = nn.Embedding(max_seq_len, width)
        self.blocks = nn.ModuleList(Block(width, heads=4) for _ in range(layers))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab_size, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.embed(tokens) + self.position(positions)  # (batch, seq, width)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))  # (batch, seq, vocab)


def build_model(ctx):
    return TinyTransformer(ctx.vocab_size, ctx.max_seq_len)
