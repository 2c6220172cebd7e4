"""Supervisor: the shared buffers of the scored run — created, sized and sealed here.

Each buffer is a memfd. Its size is fixed and sealed (`F_SEAL_SHRINK | F_SEAL_GROW |
F_SEAL_SEAL`) before any child receives it, so no child can shrink a buffer under the scorer
(a read past the end would kill it with SIGBUS) or add seals of its own. Children get the
descriptors over their channel only once the sizes are known; the supervisor never maps them.

A buffer with one trusted writer and sandboxed readers (the scorer's snapshot of the committed
weights) is sealed in two steps: here without `F_SEAL_SEAL`; the writer maps it, then adds
`F_SEAL_FUTURE_WRITE | F_SEAL_SEAL` (memfd_create(2)): from then on no process can write it or
map it writable except through the writer's own mapping. `require_writer_sealed` checks that
before the descriptor goes to a reader.
"""

from __future__ import annotations

import fcntl
import mmap
import os
from collections.abc import Iterable

from prism_eval.errors import EvaluatorError
from prism_eval.protocol import F_SEAL_FUTURE_WRITE

_SIZE_SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW
_WRITER_SEALS = F_SEAL_FUTURE_WRITE | fcntl.F_SEAL_SEAL


class SharedBuffers:
    """Named, sealed memfds; `close` releases the supervisor's descriptors.

    Buffers named in `writer_sealed` are left for their one writer to seal against writes.
    """

    def __init__(self, sizes: dict[str, int], writer_sealed: Iterable[str] = ()) -> None:
        self._fds: dict[str, int] = {}
        left_open = set(writer_sealed)
        try:
            for name, size in sizes.items():
                fd = os.memfd_create(f"prism-{name}", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
                self._fds[name] = fd
                # At least one page: a zero-length file cannot be mapped.
                os.ftruncate(fd, max(size, mmap.PAGESIZE))
                seals = _SIZE_SEALS if name in left_open else _SIZE_SEALS | fcntl.F_SEAL_SEAL
                fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
        except BaseException:
            self.close()
            raise

    def require_writer_sealed(self, name: str) -> None:
        """Raise unless `name`'s writer has sealed it: nobody else can write it any more."""
        seals = fcntl.fcntl(self._fds[name], fcntl.F_GET_SEALS)
        if seals & _WRITER_SEALS != _WRITER_SEALS:
            raise EvaluatorError(
                "internal.buffer_unsealed",
                f"the {name} buffer is not sealed against writes (seals {seals:#x}); it is "
                "not handed to a sandboxed reader",
            )

    def fds(self, names: Iterable[str]) -> list[int]:
        """The descriptors of `names`, in that order (still owned by this object)."""
        return [self._fds[name] for name in names]

    def close(self) -> None:
        """Close the supervisor's descriptors; children keep theirs."""
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
