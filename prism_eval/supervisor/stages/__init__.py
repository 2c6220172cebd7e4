"""Supervisor: the stages that run workers — probe, train (the capture), audit, ranks."""
