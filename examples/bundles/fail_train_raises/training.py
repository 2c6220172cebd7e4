import torch.nn.functional as F


def train(ctx):
    model = ctx.build_model()
    for step, batch in enumerate(ctx.iter_train_batches(model, batch_size=8, seq_len=64)):
        if step == 2:
            raise RuntimeError("out of ideas at step 2")
        logits = model(batch[:, :-1])
        F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1)).backward()
