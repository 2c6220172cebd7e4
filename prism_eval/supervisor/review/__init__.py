"""Supervisor: the LLM review — its prompt, its networked client and its signed verdict."""
