class MyTokenizer:
    """A miner-made tokenizer: the supervisor owns tokenization, so this is refused."""

    def encode(self, text):
        return [0] * len(text)


def train(ctx):
    model = ctx.build_model()
    for _batch in ctx.iter_train_batches(model, batch_size=8, seq_len=64, tokenizer=MyTokenizer()):
        pass
