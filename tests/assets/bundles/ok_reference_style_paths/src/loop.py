# The loop, run(ctx): the architecture is imported by its file name, as in the reference.
import torch
import torch.nn.functional as F
from net import create
from schedule import learning_rate


def run(ctx):
    model = create(ctx).to(ctx.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate(0))
    for step, batch in enumerate(ctx.iter_train_batches(model, batch_size=4, seq_len=64)):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step)
        logits = model(batch.tokens)
        loss = F.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), batch.tokens[:, 1:].reshape(-1)
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
