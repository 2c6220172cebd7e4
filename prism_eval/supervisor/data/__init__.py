"""Supervisor: the text an evaluation scores — locked data, reference tokenizers, the stream.

`locked` verifies a data directory's manifest and every shard's hash and yields documents;
`prepare` builds and locks such a directory; `tokenizers` are the reference tokenizers the
supervisor tokenizes with; `packing` lays the documents out as the scored stream of batches.

May import: `prism_eval.errors`, `prism_eval.tokenizer_files`; no other supervisor package.
Offers: the names in `__all__`.
"""

from prism_eval.supervisor.data.locked import (
    DataManifest,
    Document,
    iter_documents,
    manifest_sha256,
    verify_data_dir,
)
from prism_eval.supervisor.data.packing import BatchProducer, PackedBatch, StreamTally, pack_batches
from prism_eval.supervisor.data.prepare import lock_data_dir, prepare_data
from prism_eval.supervisor.data.tokenizers import Tokenizer, load_tokenizer, tokenizer_dir

__all__ = [
    "BatchProducer",
    "DataManifest",
    "Document",
    "PackedBatch",
    "StreamTally",
    "Tokenizer",
    "iter_documents",
    "load_tokenizer",
    "lock_data_dir",
    "manifest_sha256",
    "pack_batches",
    "prepare_data",
    "tokenizer_dir",
    "verify_data_dir",
]
