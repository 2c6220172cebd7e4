"""Supervisor: the locked data, the reference tokenizers and the packed scored stream."""
