def train(ctx):
    model = ctx.build_model()
    model.train()  # builds the model, then returns without touching the stream
