def train(ctx):
    model = ctx.build_model()
    for step, _batch in enumerate(ctx.iter_train_batches(model, batch_size=8, seq_len=64)):
        if step == 3:
            break  # stops before the byte budget is spent
