import torch
import torch.nn.functional as F
from architecture import build_model
from prism_challenge.evaluator.interface import PrismContext


def train(ctx: PrismContext) -> None:
    model = build_model(ctx).to(ctx.device)
    tokenizer = ctx.reference_tokenizer("gpt2")
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for batch in ctx.iter_train_batches(model, batch_size=4, seq_len=64, tokenizer=tokenizer):
        logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
