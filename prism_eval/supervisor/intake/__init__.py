"""Supervisor: intake — the bundle read safely, its contract, its lint."""
