"""Supervisor: reading a bundle's manifest YAML safely, and saying clearly what is wrong with it.

No aliases (no billion laughs), no silent duplicate keys, a size cap; pydantic's errors become
one rejection, and an unknown key names the keys its section allows.
"""

from __future__ import annotations

import difflib
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from prism_eval.errors import Rejected

MAX_MANIFEST_BYTES = 64 * 1024


class _ManifestLoader(yaml.SafeLoader):
    """Safe YAML without aliases (no billion laughs) and without silent duplicate keys."""

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
            raise yaml.MarkedYAMLError(problem="aliases are not allowed", problem_mark=mark)
        return super().compose_node(parent, index)

    def compose_mapping_node(self, anchor: Any) -> yaml.MappingNode:
        node = super().compose_mapping_node(anchor)
        seen: set[str] = set()
        for key, _ in node.value:
            if isinstance(key, yaml.ScalarNode):
                if key.value in seen:
                    raise yaml.MarkedYAMLError(
                        problem=f"duplicate key {key.value[:80]!r}", problem_mark=key.start_mark
                    )
                seen.add(key.value)
        return node


def load_manifest_yaml(text: str, path: str) -> dict[str, Any] | None:
    """The manifest's mapping, None when it is empty; Rejected when it is not one."""
    if len(text) > MAX_MANIFEST_BYTES:
        raise Rejected("contract.invalid", f"{path} is over {MAX_MANIFEST_BYTES} bytes")
    try:
        data = yaml.load(text, Loader=_ManifestLoader)
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else 0
        raise Rejected(
            "contract.bad_yaml", f"{path}:{line}: {exc.problem}", evidence=[str(exc)[:500]]
        ) from exc
    except (yaml.YAMLError, RecursionError) as exc:
        raise Rejected("contract.bad_yaml", f"{path}: {str(exc)[:300]}") from exc
    if data is None:
        return None
    if not isinstance(data, dict):
        raise Rejected("contract.invalid", f"{path} must be a mapping of keys to values")
    return data


def manifest_rejection(
    exc: ValidationError, path: str, model: type[BaseModel], sections: dict[str, type[BaseModel]]
) -> Rejected:
    """Turn pydantic's errors into one rejection; an unknown key names the allowed ones."""
    errors = exc.errors(include_input=False)
    for error in errors:
        if error["type"] == "extra_forbidden":
            *section, key = (str(part) for part in error["loc"])
            owner = sections[section[0]] if section else model
            allowed = list(owner.model_fields)
            close = difflib.get_close_matches(key, allowed, n=1)
            where = f" in section {section[0]!r}" if section else ""
            return Rejected(
                "contract.unknown_key",
                f"unknown key {key[:80]!r}{where} in {path}; allowed: {', '.join(allowed)}",
                hint=f"did you mean {close[0]!r}?" if close else "remove the key",
            )
    details = [f"{'.'.join(map(str, e['loc'])) or path}: {e['msg']}" for e in errors]
    return Rejected("contract.invalid", f"{path}: {details[0]}", evidence=details)
