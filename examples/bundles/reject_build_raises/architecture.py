def build_model(ctx):
    raise ValueError("this model needs a config file that is not there")
