"""Worker (sandboxed): the only code that runs next to miner code.

Started as a process (`python -m prism_eval.worker`, or forked by the zygote), never imported
by the supervisor nor the scorer: whatever it holds, the miner's code in the same process can
read. `zygote` imports torch once and forks the workers; `isolation`, `landlock` and `seccomp`
sandbox a worker before any miner import; `probe`, `trainer` and `predictor` are the jobs.

May import: `prism_eval.protocol`, `prism_eval.tokenizer_files`, the standard library, torch,
numpy, safetensors, and the reference tokenizers' libraries (tiktoken, sentencepiece).
Offers: nothing; it is started, not imported.
"""

__all__: list[str] = []
