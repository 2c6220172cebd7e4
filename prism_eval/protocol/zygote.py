"""Shared: the zygote's messages — spawn a worker, report its pid, report how it ended.

supervisor → Spawn (+ descriptors: the output pipe, then one per entry of `targets`)
zygote → Spawned (the child's pid)
zygote → Exited (whenever a child ends, with its exit code; negative: the signal)
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from prism_eval.protocol.common import Message


class Spawn(Message):
    """Fork a worker: the first descriptor becomes its stdout and stderr, each next one the
    descriptor number in `targets`; it runs in `cwd` with exactly `env`, and its channel to the
    supervisor is `targets[0]`."""

    type: Literal["spawn"] = "spawn"
    request: int
    env: dict[str, str]
    cwd: str
    targets: list[Annotated[int, Field(ge=3)]] = Field(min_length=1, max_length=6)


class Spawned(Message):
    """The child of Spawn `request` runs as `pid`."""

    type: Literal["spawned"] = "spawned"
    request: int
    pid: int = Field(gt=0)


class Exited(Message):
    """A child ended: its exit code, or minus the signal that ended it."""

    type: Literal["exited"] = "exited"
    pid: int = Field(gt=0)
    returncode: int
