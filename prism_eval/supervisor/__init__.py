"""Supervisor: the trusted evaluator: every stage, never torch, never miner code."""
