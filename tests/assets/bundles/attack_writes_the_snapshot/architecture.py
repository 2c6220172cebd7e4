"""Attack: the predictor tries every way it can find to write the scorer's snapshot, the
weights the auditor also reads (so a forged snapshot could make a leaking pass look honest).

It finds the snapshot's descriptor by name and tries a writable shared mapping, pwrite, a
re-open through /proc/self/fd, ftruncate, and adding seals of its own. Each must be refused;
it raises if one gets through. Otherwise it predicts exactly like its honest twin (ok_trigram).
"""

import mmap
import os

import torch
import torch.nn as nn

_tried = False


def _attempts(fd):
    size = os.fstat(fd).st_size

    def shared_mapping():
        mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)[0] = 1

    def positional_write():
        os.pwrite(fd, b"\x01", 0)

    def reopened():
        with open(f"/proc/self/fd/{fd}", "r+b", buffering=0) as again:
            again.write(b"\x01")

    def truncate():
        os.ftruncate(fd, 0)

    def seal():
        import fcntl

        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_WRITE)

    return [shared_mapping, positional_write, reopened, truncate, seal]


def try_to_write_the_snapshot():
    global _tried
    found = []
    for name in os.listdir("/proc/self/fd"):
        try:
            if "prism-snapshot" in os.readlink(f"/proc/self/fd/{name}"):
                found.append(int(name))
        except OSError:  # the descriptor listdir itself used is gone
            continue
    if not found or _tried:
        return
    _tried = True
    refused = 0
    for fd in found:
        for attempt in _attempts(fd):
            try:
                attempt()
            except OSError:
                refused += 1
            else:
                raise RuntimeError(f"wrote the scorer's snapshot: {attempt.__name__}")
    print(f"snapshot: {len(found)} descriptor(s), {refused} writes refused", flush=True)


class Trigram(nn.Module):
    def __init__(self, vocab_size, width=32):
        super().__init__()
        self.current = nn.Embedding(vocab_size, width)
        self.previous = nn.Embedding(vocab_size, width)
        self.head = nn.Linear(width, vocab_size)

    def forward(self, tokens):
        if not self.training:
            try_to_write_the_snapshot()
        before = torch.cat([torch.zeros_like(tokens[:, :1]), tokens[:, :-1]], dim=1)
        return self.head(torch.tanh(self.current(tokens) + self.previous(before)))


def build_model(ctx):
    return Trigram(ctx.vocab_size)
