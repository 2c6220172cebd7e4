# A helper module next to the loop, imported by its plain name.
def learning_rate(step: int, base: float = 3e-3, warmup: int = 4) -> float:
    return base * min(1.0, (step + 1) / warmup)
