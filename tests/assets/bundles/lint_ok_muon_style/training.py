"""
A loop in the style of the Muon optimizer's reference code: a Newton-Schulz iteration that
orthogonalises each 2-D update (compiled when a compiler is there), an Optimizer subclass with
momentum buffers in self.state, gradients averaged across ranks when distributed, and AdamW
for embeddings, heads and vectors.
"""

import os

import torch
import torch.distributed as dist
import torch.nn.functional as F
from architecture import build_model


def zeropower_via_newtonschulz5(G: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """Approximately orthogonalise G with a quintic Newton-Schulz iteration."""
    assert G.ndim == 2
    a, b, c = (3.4445, -4.7750, 2.0315)
    X = G.bfloat16() if G.is_cuda else G.float()
    if G.size(0) > G.size(1):
        X = X.T
    X = X / (X.norm() + 1e-7)
    for _ in range(steps):
        A = X @ X.T
        B = b * A + c * A @ A
        X = a * X + B @ X
    if G.size(0) > G.size(1):
        X = X.T
    return X.to(G.dtype)


if os.environ.get("MUON_COMPILE") == "1":
    zeropower_via_newtonschulz5 = torch.compile(zeropower_via_newtonschulz5)


class Muon(torch.optim.Optimizer):
    def __init__(self, params, lr=0.02, momentum=0.95, nesterov=True, ns_steps=5):
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if dist.is_available() and dist.is_initialized():
                    dist.all_reduce(g, op=dist.ReduceOp.AVG)
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(g)
                buf = state["momentum_buffer"]
                buf.mul_(group["momentum"]).add_(g)
                g = g.add(buf, alpha=group["momentum"]) if group["nesterov"] else buf
                update = zeropower_via_newtonschulz5(g, steps=group["ns_steps"])
                scale = max(1, p.size(0) / p.size(1)) ** 0.5
                p.add_(update, alpha=-group["lr"] * scale)
        return loss


def train(ctx):
    model = build_model(ctx).to(ctx.device)
    matrices = [
        p
        for n, p in model.named_parameters()
        if p.ndim == 2 and "embed" not in n and "head" not in n
    ]
    others = [
        p
        for n, p in model.named_parameters()
        if not (p.ndim == 2 and "embed" not in n and "head" not in n)
    ]
    optimizers = [Muon(matrices, lr=0.02), torch.optim.AdamW(others, lr=3e-3, betas=(0.9, 0.95))]
    for step, batch in enumerate(ctx.iter_train_batches(model, batch_size=4, seq_len=64)):
        logits = model(batch.tokens)
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), batch.tokens[:, 1:].flatten())
        loss.backward()
        for opt in optimizers:
            opt.step()
        model.zero_grad(set_to_none=True)
        if step % 50 == 0 and ctx.rank == 0:
            print(f"step {step} loss {loss.item():.4f}")
