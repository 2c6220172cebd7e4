def build_model(ctx):
    return {"layers": 2, "width": 128}  # a config, not a torch.nn.Module
