"""
A trainer in the style of minGPT's trainer.py: a config node, callbacks keyed by event in a
defaultdict, timing with time.time, and the run's state on the trainer object.
"""

import time
from collections import defaultdict

import torch
from architecture import CfgNode, build_model


class Trainer:
    @staticmethod
    def get_default_config():
        return CfgNode(
            batch_size=4,
            learning_rate=5e-4,
            betas=(0.9, 0.95),
            weight_decay=0.1,
            grad_norm_clip=1.0,
        )

    def __init__(self, config, model, ctx):
        self.config = config
        self.model = model
        self.ctx = ctx
        self.optimizer = None
        self.callbacks = defaultdict(list)
        self.iter_num = 0
        self.iter_time = 0.0
        self.iter_dt = 0.0

    def add_callback(self, onevent: str, callback):
        self.callbacks[onevent].append(callback)

    def trigger_callbacks(self, onevent: str):
        for callback in self.callbacks.get(onevent, []):
            callback(self)

    def run(self):
        model, config = self.model, self.config
        self.optimizer = model.configure_optimizers(config)
        model.train()
        self.iter_time = time.time()
        for batch in self.ctx.iter_train_batches(model, batch_size=config.batch_size, seq_len=64):
            x, y = batch.inputs, batch.targets
            logits, self.loss = model(x, y)
            model.zero_grad(set_to_none=True)
            self.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_norm_clip)
            self.optimizer.step()
            self.trigger_callbacks("on_batch_end")
            self.iter_num += 1
            tnow = time.time()
            self.iter_dt = tnow - self.iter_time
            self.iter_time = tnow


def train(ctx):
    model = build_model(ctx).to(ctx.device)
    trainer = Trainer(Trainer.get_default_config(), model, ctx)

    def batch_end_callback(trainer):
        if trainer.iter_num % 100 == 0:
            print(
                f"iter_dt {trainer.iter_dt * 1000:.2f}ms; iter {trainer.iter_num}: "
                f"train loss {trainer.loss.item():.5f}"
            )

    trainer.add_callback("on_batch_end", batch_end_callback)
    trainer.run()
