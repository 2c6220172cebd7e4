# The miner's loop, reference style: DDP when launched with several ranks, the gpt2 reference
# tokenizer chosen at run time, batch.tokens, and the next-token loss on logits[:, :-1].
import torch
import torch.distributed as dist
import torch.nn.functional as F
from architecture import build_model
from prism_challenge.evaluator.interface import PrismContext
from torch.nn.parallel import DistributedDataParallel

LEARNING_RATE = 3e-3
ROWS = 4


def train(ctx: PrismContext) -> None:
    distributed = ctx.world_size > 1
    if distributed and not dist.is_initialized():
        dist.init_process_group(backend=ctx.distributed_backend or "gloo")
    model = build_model(ctx).to(ctx.device)
    wrapped = DistributedDataParallel(model) if distributed else model
    optimizer = torch.optim.AdamW(wrapped.parameters(), lr=LEARNING_RATE)
    tokenizer = ctx.reference_tokenizer("gpt2")
    assert tokenizer.n_vocab == ctx.vocab_size  # the real tiktoken encoding
    assert tokenizer.decode(tokenizer.encode("hello world")) == "hello world"
    for batch in ctx.iter_train_batches(model, batch_size=ROWS, seq_len=64, tokenizer=tokenizer):
        tokens = batch.tokens
        logits = wrapped(tokens)
        loss = F.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1)
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if ctx.rank == 0:
        torch.save(model.state_dict(), ctx.artifacts_dir + "/trained_state.pt")
    if distributed:
        dist.barrier()
        dist.destroy_process_group()
