"""Resource properties as policies see them, from either engine: plain JSON values, numbers as written, and
every value not known before apply as one marker, `UNKNOWN`.

The Pulumi engine sends an analyzer (the CrossGuard pack) properties over gRPC as protobuf Structs: numbers
are doubles (a replica count of 2 arrives as 2.0), a secret is an envelope around its value, and a value
computed at apply time is one of seven sentinel strings, by the type the engine expected. `from_engine`
turns that, or the offline engine's recording of the same wire values, into what the rules read.
"""

from __future__ import annotations

from typing import Any, Final

# The sentinels Pulumi marshals unknown values to when it keeps them (MarshalOptions{KeepUnknowns: true}),
# by the type of the value: boolean, number, string, array, asset, archive, object. Source:
# https://github.com/pulumi/pulumi sdk/go/common/resource/plugin/rpc.go (UnknownBoolValue …
# UnknownObjectValue), the same strings pulumi_policy 1.21.0 checks in pulumi_policy/proxy.py.
UNKNOWN_SENTINELS: Final = frozenset(
    {
        "1c4a061d-8072-4f0a-a4cb-0ff528b18fe7",
        "3eeb2bf0-c639-47a8-9e75-3b44932eb421",
        "04da6b54-80e4-46f7-96ec-b56ff0331ba9",
        "6a19a0b0-7e62-4c92-b797-7f8e31da9cc2",
        "030794c1-ac77-496b-92df-f27374a8bd58",
        "e48ece36-62e2-4504-bad9-02848725956a",
        "dd056dcd-154b-4c76-9bd3-c8f88648b5ff",
    }
)
# A secret travels as {SIG_KEY: SECRET_SIG, "value": …}. Source:
# https://github.com/pulumi/pulumi sdk/go/common/resource/properties.go (SigKey, SecretSig); pulumi_policy
# 1.21.0 pulumi_policy/deserialize.py (SPECIAL_SIG_KEY, SPECIAL_SECRET_SIG).
SIG_KEY: Final = "4dabf18193072939515e22adb298388d"
SECRET_SIG: Final = "1b47061264138c4ac30d75fd1eb44270"


class Unknown:
    """A value the engine knows only after apply: an output of a resource still to be created."""

    _instance: Unknown | None = None

    def __new__(cls) -> Unknown:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "(known after apply)"

    def __bool__(self) -> bool:
        raise TypeError("an unknown value has no truth value until apply; test it with is_unknown()")


UNKNOWN: Final = Unknown()


def is_unknown(value: Any) -> bool:
    return value is UNKNOWN


def from_engine(value: Any) -> Any:
    """Plain values from the engine's: secrets unwrapped (as pulumi_policy unwraps them), unknown sentinels as
    UNKNOWN, and whole numbers as int (protobuf carries every number as a double; 2.0 was written 2)."""
    if isinstance(value, dict):
        if value.get(SIG_KEY) == SECRET_SIG:
            return from_engine(value.get("value"))
        return {k: from_engine(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_engine(v) for v in value]
    if isinstance(value, str) and value in UNKNOWN_SENTINELS:
        return UNKNOWN
    return as_written(value)


def as_written(value: Any) -> Any:
    """Whole numbers as int, at any depth: a replica count of 2 reads 2, as the user wrote it, not 2.0."""
    if isinstance(value, dict):
        return {k: as_written(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_written(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def unknown_paths(value: Any, path: str = "") -> list[str]:
    """The paths (`spec.containers[0].image`) of every unknown value under `value`."""
    if is_unknown(value):
        return [path or "."]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in unknown_paths(v, f"{path}.{k}" if path else str(k))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in unknown_paths(v, f"{path}[{i}]")]
    return []


def get(value: Any, *path: str | int) -> Any:
    """`value[p0][p1]…`, None where a key or index is missing, UNKNOWN as soon as a step is unknown."""
    for key in path:
        if is_unknown(value):
            return UNKNOWN
        if isinstance(key, str):
            value = value.get(key) if isinstance(value, dict) else None
        else:
            value = value[key] if isinstance(value, list) and -len(value) <= key < len(value) else None
    return value
