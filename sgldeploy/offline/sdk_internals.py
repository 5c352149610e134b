"""The private parts of the Pulumi Python SDK that the offline engine relies on, and only here.

Read from pulumi 3.272.0, the version pyproject.toml pins. Paths below are in the SDK's source, both
https://github.com/pulumi/pulumi sdk/python/lib/pulumi/ and the installed site-packages/pulumi/:
- runtime/rpc.py: `UNKNOWN` (the string an unknown travels as), `_special_sig_key` and `_special_secret_sig`
  (the envelope of a secret or an asset), `deserialize_properties(struct, keep_unknowns)`,
  `get_resource_module(pkg, mod, version)` (the registry of generated SDK modules).
- output.py: `Unknown`, the class of the unknown a deserialized value holds.
- _types.py: `resource_types(cls)`, `is_output_type(cls)`, `output_type_types(cls)` (property names → types).
- runtime/mocks.py: `MockMonitor` (its `__init__(mocks)`, `RegisterResource`, `RegisterResourceOutputs`),
  `set_mocks(..., monitor=)`, which builds a root Stack when none is set.
- runtime/settings.py: `SETTINGS.rpc_manager` (pending RPCs) and `SETTINGS.outputs` (pending outputs), per
  process, and `set_root_resource`.
- runtime/stack.py: `run_in_stack(func)`, how the SDK's entry point runs a program inside a Stack resource.
- runtime/sync_await.py: `_sync_await(awaitable)`, which pumps the current event loop; its
  `_ensure_event_loop` opens a loop in each worker thread the mock monitor is called from, and never closes it.
tests/test_sdk_internals.py checks each of these and fails, naming the one that moved, on an SDK upgrade.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import pulumi
from pulumi import _types
from pulumi.runtime import mocks, rpc, settings
from pulumi.runtime.stack import run_in_stack
from pulumi.runtime.sync_await import _sync_await

PULUMI_VERSION = "3.272.0"  # the SDK these were read from; the test fails when the installed one differs

WIRE_UNKNOWN = rpc.UNKNOWN  # the sentinel string an unknown value travels as (Pulumi's UnknownStringValue)
SIG_KEY = rpc._special_sig_key  # the key of a special value's envelope (secret, asset, archive, reference)
SECRET_SIG = rpc._special_secret_sig  # SIG_KEY's value in a secret's envelope; the secret is at "value"

MockMonitor = mocks.MockMonitor  # the monitor set_mocks drives; the offline engine records by subclassing it


def is_unknown(value: Any) -> bool:
    """Whether a deserialized value is unknown (in either form the SDK gives it)."""
    return isinstance(value, pulumi.output.Unknown) or (isinstance(value, str) and value == WIRE_UNKNOWN)


def is_secret(value: dict[str, Any]) -> bool:
    """Whether a deserialized map is a secret's envelope."""
    return value.get(SIG_KEY) == SECRET_SIG


def deserialize(struct: Any) -> Any:
    """Properties sent over gRPC (a protobuf Struct) as Python values, keeping unknowns."""
    return rpc.deserialize_properties(struct, keep_unknowns=True)


def resource_output_types(token: str) -> dict[str, Any]:
    """Output property name → type of the SDK class registered for `token` (empty for components, providers
    and Kubernetes custom resources, whose classes carry no types)."""
    pkg, mod, _ = (token.split(":") + ["", ""])[:3]
    module = rpc.get_resource_module(pkg, mod, "")
    mod_info = getattr(module, "mod_info", None) or {}  # the generated SDK's token → class table
    class_name = (mod_info.get("classes") or {}).get(token)
    if class_name is None:
        return {}
    return _types.resource_types(getattr(importlib.import_module(mod_info["fqn"]), class_name))


def is_output_type(typ: type) -> bool:
    """Whether `typ` is a generated SDK output type (a nested object of a resource's state)."""
    return _types.is_output_type(typ)


def output_type_fields(typ: type) -> dict[str, Any]:
    """Property name → type of an output type's fields."""
    return _types.output_type_types(typ)


def start_run(
    monitor: mocks.MockMonitor, project: str, stack: str, logger: logging.Logger
) -> asyncio.AbstractEventLoop:
    """Point the SDK at `monitor` for a preview of `project`/`stack`, afresh: a new event loop (the SDK keeps
    per-loop state), no RPC or output left pending by an earlier run in this process, and no root stack yet.
    Returns the loop, for the caller to close when the run is over."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    settings.SETTINGS.rpc_manager.clear()
    settings.SETTINGS.outputs.clear()
    mocks.set_mocks(monitor.mocks, project=project, stack=stack, preview=True, logger=logger, monitor=monitor)
    # set_mocks made a root stack for unit tests; the program gets its own (run_in_stack), as under preview.
    settings.set_root_resource(None)  # type: ignore[arg-type]
    return loop


def run_in_new_stack(program: Callable[[], None], timeout: float) -> None:
    """Run `program` inside a new Stack resource as the SDK's entry point does, waiting for every resource and
    output it starts; TimeoutError after `timeout` seconds."""
    running: Coroutine[Any, Any, None] = run_in_stack(program)
    _sync_await(asyncio.wait_for(running, timeout))


def close_leftover_event_loops() -> None:
    """Close the event loops the SDK opened in its worker threads and never closed, while their sockets are
    still open: left to interpreter shutdown, they print "Exception ignored … Invalid file descriptor". For a
    process about to exit (the CLI registers it with atexit); a later plan in the same process would find them
    closed."""
    for obj in gc.get_objects():
        if isinstance(obj, asyncio.BaseEventLoop) and not obj.is_closed() and not obj.is_running():
            obj.close()
