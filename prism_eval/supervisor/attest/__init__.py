"""Supervisor: the signed record — its models, signing, verification, DSSE."""
