"""Derive deploy/seccomp.json, the operators' seccomp profile, from the engine's default one.

The container engine's default profile (containers-common ships it as
/usr/share/containers/seccomp.json; Docker's is the same format) minus what an evaluator never
needs and a hostile bundle would use (DESIGN §3):

- `ptrace`, `process_vm_readv`, `process_vm_writev`: reading or steering another process;
- `io_uring_*`: a second system-call interface that seccomp cannot see into;
- every socket family but `AF_UNIX` (`socket` and `socketpair`): the workers' channel and CUDA
  need `AF_UNIX`; nothing in an evaluation needs another family.

The removed calls are denied with EPERM by explicit rules (rather than falling to the profile's
ENOSYS default), so a refused call reads as refused. The engine's own conditional `socket` rules
are taken out before ours go in: libseccomp refuses a second rule of the same shape ("file
exists"). The output is deterministic; `--check` fails when the file on disk is stale.

    python scripts/make_seccomp_profile.py                     # writes deploy/seccomp.json
    python scripts/make_seccomp_profile.py --check             # exit 1 if it would change
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

DENIED = (
    "io_uring_enter", "io_uring_register", "io_uring_setup", "process_vm_readv",
    "process_vm_writev", "ptrace",
)  # fmt: skip
SOCKET_CALLS = ("socket", "socketpair")
AF_UNIX = 1
EPERM = 1
EAFNOSUPPORT = 97


class ProfileError(Exception):
    """The default profile is missing or not in the expected format."""


def _family_rule(name: str, op: str, action: str, errno: int | None) -> dict[str, Any]:
    rule: dict[str, Any] = {
        "names": [name],
        "action": action,
        "args": [{"index": 0, "value": AF_UNIX, "valueTwo": 0, "op": op}],
        "comment": f"prism-eval: {name}() for AF_UNIX only",
    }
    if errno is not None:
        rule["errnoRet"] = errno
    return rule


def derive_profile(default: dict[str, Any]) -> dict[str, Any]:
    """The default profile without the denied calls, with sockets restricted to AF_UNIX."""
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
    for name in SOCKET_CALLS:
        rules.append(_family_rule(name, "SCMP_CMP_EQ", "SCMP_ACT_ALLOW", None))
        rules.append(_family_rule(name, "SCMP_CMP_NE", "SCMP_ACT_ERRNO", EAFNOSUPPORT))
    profile["syscalls"] = rules
    return profile


def render(profile: dict[str, Any]) -> str:
    """The profile as the file's text: two-space JSON and a final newline."""
    return json.dumps(profile, indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write (or with --check, compare) the derived profile; return the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--default", type=Path, default=DEFAULT_PROFILE, help="engine profile")
    parser.add_argument("--out", type=Path, default=OUT, help="where to write the profile")
    parser.add_argument("--check", action="store_true", help="exit 1 if --out is stale")
    args = parser.parse_args(argv)
    try:
        default = json.loads(args.default.read_text())
        text = render(derive_profile(default))
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
