"""Supervisor: the shared buffers of the scored run — created, sized and sealed here.

Each buffer is a memfd. Its size is fixed and sealed (`F_SEAL_SHRINK | F_SEAL_GROW |
F_SEAL_SEAL`) before any child receives it, so no child can shrink a buffer under the scorer
(a read past the end would kill it with SIGBUS) or add seals of its own. Children get the
descriptors over their channel only once the sizes are known; the supervisor never maps them.
"""

from __future__ import annotations

import fcntl
import mmap
import os
from collections.abc import Iterable

_SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL


class SharedBuffers:
    """Named, sealed memfds; `close` releases the supervisor's descriptors."""

    def __init__(self, sizes: dict[str, int]) -> None:
        self._fds: dict[str, int] = {}
        try:
            for name, size in sizes.items():
                fd = os.memfd_create(f"prism-{name}", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
                self._fds[name] = fd
                # At least one page: a zero-length file cannot be mapped.
                os.ftruncate(fd, max(size, mmap.PAGESIZE))
                fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
        except BaseException:
            self.close()
            raise

    def fds(self, names: Iterable[str]) -> list[int]:
        """The descriptors of `names`, in that order (still owned by this object)."""
        return [self._fds[name] for name in names]

    def close(self) -> None:
        """Close the supervisor's descriptors; children keep theirs."""
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
