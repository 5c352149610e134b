"""Read a Pulumi stack file (`Pulumi.<stack>.yaml`) the way the Pulumi CLI hands it to a program.

Config keys keep Pulumi's `namespace:key` layout; structured values become JSON strings, as the CLI
passes them. `secure:` values cannot be decrypted here and are not needed offline: each becomes an
opaque stand-in marked secret, so the program sees that the secret is set but never its value.
"""

from __future__ import annotations

import json
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sgldeploy.spec.problems import InvalidInput, Problem

OPAQUE_SECRET = "offline-opaque-secret"
MAX_STACK_FILE_BYTES = 1 << 20


class _StrictLoader(yaml.SafeLoader):
    """Safe YAML, and stricter: no anchors or aliases (a few lines of them expand to gigabytes once the config
    is serialized), no duplicate keys (the last one would silently win)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(
                None,
                None,
                "anchors and aliases (&name, *name) are not supported in stack files; write the values out",
                self.peek_event().start_mark,  # type: ignore[no-untyped-call]
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, Hashable) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}; keep one of them", key_node.start_mark
                )
            if isinstance(key, Hashable):
                seen.add(key)
        return super().construct_mapping(node, deep)


@dataclass(frozen=True)
class StackFile:
    path: Path
    stack: str
    config: dict[str, str]  # full key → value as the Pulumi CLI passes it
    secret_keys: list[str]

    def object(self, key: str) -> Any:
        value = self.config.get(key)
        if value is None:
            return None
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value  # plain text where an object belongs: validation names the key and what it needs


def stack_path(stack: str, root: Path) -> Path:
    return root / "stacks" / f"Pulumi.{stack}.yaml"


def stack_name(path: Path) -> str:
    name = path.name
    if name.startswith("Pulumi.") and name.endswith((".yaml", ".yml")):
        return name[len("Pulumi.") :].rsplit(".", 1)[0]
    return path.stem


def read_stack_file(path: Path, project: str = "sgldeploy") -> StackFile:
    where = str(path)
    if not path.is_file():
        raise InvalidInput(
            [
                Problem(
                    where,
                    "stack file not found",
                    "create it, or pass --stack NAME for stacks/Pulumi.NAME.yaml or --config FILE",
                    show_got=False,
                )
            ]
        )
    try:
        raw_bytes = path.read_bytes()
    except OSError as exc:
        raise InvalidInput(
            [
                Problem(
                    where,
                    f"cannot be read ({exc.strerror or exc.__class__.__name__})",
                    "check the file's permissions",
                    show_got=False,
                )
            ]
        ) from None
    if len(raw_bytes) > MAX_STACK_FILE_BYTES:
        raise InvalidInput(
            [
                Problem(
                    where,
                    f"is larger than {MAX_STACK_FILE_BYTES >> 20} MiB ({len(raw_bytes)} bytes)",
                    "a stack file holds settings only; keep data (e.g. usage assumptions) in files of their own",
                    show_got=False,
                )
            ]
        )
    try:
        text = raw_bytes.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(
            [
                Problem(
                    where,
                    f"is not UTF-8 text (byte 0x{raw_bytes[exc.start]:02x} at offset {exc.start})",
                    "save the file as UTF-8",
                    show_got=False,
                )
            ]
        ) from None
    try:
        data = yaml.load(text, Loader=_StrictLoader) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        reason = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InvalidInput(
            [
                Problem(
                    where,
                    f"is not valid YAML{at}: {reason}",
                    "fix the YAML syntax (indentation, quotes, ':' after keys)",
                    show_got=False,
                )
            ]
        ) from None
    if not isinstance(data, dict):
        raise InvalidInput(
            [
                Problem(
                    where,
                    "must be a YAML mapping with a `config:` key",
                    "see stacks/Pulumi.dev.yaml for the layout",
                    data,
                )
            ]
        )
    if not data.get("config"):
        raise InvalidInput(
            [
                Problem(
                    f"{where}: config",
                    "is missing or empty",
                    "set sgldeploy:platform and sgldeploy:deployments under `config:` (see stacks/Pulumi.dev.yaml)",
                    show_got=False,
                )
            ]
        )
    raw = data["config"]
    if not isinstance(raw, dict):
        raise InvalidInput(
            [
                Problem(
                    f"{where}: config",
                    "must be a mapping of `namespace:key: value`",
                    "see stacks/Pulumi.dev.yaml for the layout",
                    raw,
                )
            ]
        )
    config: dict[str, str] = {}
    secret_keys: list[str] = []
    for key, value in raw.items():
        full = key if ":" in str(key) else f"{project}:{key}"
        if isinstance(value, dict) and set(value) == {"secure"}:
            config[full] = OPAQUE_SECRET
            secret_keys.append(full)
        elif isinstance(value, (dict, list)):
            config[full] = json.dumps(value)
        elif isinstance(value, bool):
            config[full] = "true" if value else "false"
        else:
            config[full] = "" if value is None else str(value)
    return StackFile(path=path, stack=stack_name(path), config=config, secret_keys=secret_keys)
