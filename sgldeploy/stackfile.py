"""Read a Pulumi stack file (`Pulumi.<stack>.yaml`) the way the Pulumi CLI hands it to a program.

Config keys keep Pulumi's `namespace:key` layout; structured values become JSON strings, as the CLI
passes them. `secure:` values cannot be decrypted here and are not needed offline: each becomes an
opaque stand-in marked secret, so the program sees that the secret is set but never its value.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .problems import InvalidInput, Problem

OPAQUE_SECRET = "offline-opaque-secret"


@dataclass(frozen=True)
class StackFile:
    path: Path
    stack: str
    config: dict[str, str]  # full key → value as the Pulumi CLI passes it
    secret_keys: list[str]

    def object(self, key: str) -> Any:
        value = self.config.get(key)
        return None if value is None else json.loads(value)


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
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(
            [
                Problem(
                    where,
                    f"cannot be read ({exc.__class__.__name__})",
                    "check the file's permissions and encoding (UTF-8)",
                    show_got=False,
                )
            ]
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        reason = getattr(exc, "problem", None) or "invalid YAML"
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
    raw = data.get("config") or {}
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
