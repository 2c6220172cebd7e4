"""Worker (sandboxed): the only code that runs next to miner code.

Started as a process (`python -m prism_eval.worker`), never imported by the supervisor. It
imports only `prism_eval.protocol`, the standard library and ML libraries.
"""
