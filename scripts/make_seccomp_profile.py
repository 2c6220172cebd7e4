"""Derive deploy/seccomp.json, the operators' seccomp profile, from the engine's default one.

The container engine's default profile (containers-common ships it as
/usr/share/containers/seccomp.json; Docker's is the same format) minus what an evaluator never
needs and a hostile bundle would use (docs/design.md §3):

- `ptrace`, `process_vm_readv`, `process_vm_writev`: reading or steering another process;
- `io_uring_*`: a second system-call interface that seccomp cannot see into;
- every socket family but `AF_UNIX` (`socket` and `socketpair`): the workers' channel and CUDA
  need `AF_UNIX`; a single-rank evaluation needs another family only for a loop that sets up a
  process group anyway.

`--ranks` writes deploy/seccomp-ranks.json, for `run --nproc N` with N > 1 and for such loops:
the same, but `socket` also allows `AF_INET` and route netlink, which the ranks and the trainer
use for loopback TCP (and gloo to list interfaces) inside their own private network namespace;
each worker's own filter still refuses both everywhere else.

The removed calls are denied with EPERM by explicit rules (rather than falling to the profile's
ENOSYS default), so a refused call reads as refused. The engine's own conditional `socket` rules
are taken out before ours go in: libseccomp refuses a second rule of the same shape ("file
exists"). The output is deterministic; `--check` fails when the file on disk is stale.

    python scripts/make_seccomp_profile.py                     # writes deploy/seccomp.json
    python scripts/make_seccomp_profile.py --ranks             # writes deploy/seccomp-ranks.json
    python scripts/make_seccomp_profile.py --check [--ranks]   # exit 1 if it would change
    python scripts/make_seccomp_profile.py --default docker-default.json --out my.json
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import Any

DEFAULT_PROFILE = Path("/usr/share/containers/seccomp.json")
OUT = Path(__file__).resolve().parents[1] / "deploy" / "seccomp.json"
RANKS_OUT = OUT.with_name("seccomp-ranks.json")

DENIED = (
    "io_uring_enter", "io_uring_register", "io_uring_setup", "process_vm_readv",
    "process_vm_writev", "ptrace",
)  # fmt: skip
SOCKET_CALLS = ("socket", "socketpair")
AF_UNIX, AF_INET, AF_NETLINK = 1, 2, 16
NETLINK_ROUTE = 0
EPERM = 1
EAFNOSUPPORT = 97


class ProfileError(Exception):
    """The default profile is missing or not in the expected format."""


Comparison = tuple[int, int, str]  # (argument index, value, SCMP_CMP_* op)
# (comparisons that must all hold, errno or None to allow)
UNIX_ONLY: list[tuple[list[Comparison], int | None]] = [
    ([(0, AF_UNIX, "SCMP_CMP_EQ")], None),
    ([(0, AF_UNIX, "SCMP_CMP_NE")], EAFNOSUPPORT),
]
# AF_INET and route netlink (protocol 0) too; the refusals cover the other families as disjoint
# ranges, one of them two comparisons of the same argument (libseccomp ANDs them).
RANKS_SOCKET: list[tuple[list[Comparison], int | None]] = [
    ([(0, AF_UNIX, "SCMP_CMP_EQ")], None),
    ([(0, AF_INET, "SCMP_CMP_EQ")], None),
    ([(0, AF_NETLINK, "SCMP_CMP_EQ"), (2, NETLINK_ROUTE, "SCMP_CMP_EQ")], None),
    ([(0, AF_UNIX, "SCMP_CMP_LT")], EAFNOSUPPORT),
    ([(0, AF_INET, "SCMP_CMP_GT"), (0, AF_NETLINK, "SCMP_CMP_LT")], EAFNOSUPPORT),
    ([(0, AF_NETLINK, "SCMP_CMP_GT")], EAFNOSUPPORT),
]


def _socket_rule(
    name: str, comparisons: list[Comparison], errno: int | None, families: str
) -> dict[str, Any]:
    """One rule for `name`: allow when every comparison holds, or fail with `errno`."""
    args = [{"index": i, "value": value, "valueTwo": 0, "op": op} for i, value, op in comparisons]
    rule: dict[str, Any] = {
        "names": [name],
        "action": "SCMP_ACT_ALLOW" if errno is None else "SCMP_ACT_ERRNO",
        "args": args,
        "comment": f"prism-eval: {name}() for {families} only",
    }
    if errno is not None:
        rule["errnoRet"] = errno
    return rule


def _socket_rules(ranks: bool) -> list[dict[str, Any]]:
    """`socket` and `socketpair` for AF_UNIX only; with `ranks`, `socket` as RANKS_SOCKET."""
    rules = []
    for name in SOCKET_CALLS:
        if ranks and name == "socket":
            families, table = "AF_UNIX, AF_INET and route netlink", RANKS_SOCKET
        else:
            families, table = "AF_UNIX", UNIX_ONLY
        rules += [_socket_rule(name, comparisons, errno, families) for comparisons, errno in table]
    return rules


def derive_profile(default: dict[str, Any], ranks: bool = False) -> dict[str, Any]:
    """The default profile without the denied calls, with sockets restricted to AF_UNIX (and
    AF_INET with `ranks`)."""
    if not isinstance(default.get("syscalls"), list) or "defaultAction" not in default:
        raise ProfileError("not a container seccomp profile: no defaultAction or syscalls")
    profile = copy.deepcopy(default)
    removed = set(DENIED) | set(SOCKET_CALLS)
    rules = []
    for rule in profile["syscalls"]:
        names = [name for name in rule.get("names", []) if name not in removed]
        if names:
            rules.append({**rule, "names": names})
    rules.append(
        {
            "names": list(DENIED),
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": EPERM,
            "comment": "prism-eval: no tracing other processes, no io_uring",
        }
    )
    rules += _socket_rules(ranks)
    profile["syscalls"] = rules
    return profile


def render(profile: dict[str, Any]) -> str:
    """The profile as the file's text: two-space JSON and a final newline."""
    return json.dumps(profile, indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write (or with --check, compare) the derived profile; return the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--default", type=Path, default=DEFAULT_PROFILE, help="engine profile")
    parser.add_argument("--out", type=Path, help="where to write the profile")
    parser.add_argument("--check", action="store_true", help="exit 1 if --out is stale")
    parser.add_argument("--ranks", action="store_true", help="the profile for --nproc > 1")
    args = parser.parse_args(argv)
    args.out = args.out or (RANKS_OUT if args.ranks else OUT)
    try:
        default = json.loads(args.default.read_text())
        text = render(derive_profile(default, args.ranks))
    except (OSError, ValueError, ProfileError) as exc:
        print(f"make_seccomp_profile: {args.default}: {exc}", file=sys.stderr)
        return 2
    if args.check:
        current = args.out.read_text() if args.out.is_file() else ""
        if current != text:
            print(
                f"make_seccomp_profile: {args.out} is stale; rerun without --check", file=sys.stderr
            )
            return 1
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"make_seccomp_profile: wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
