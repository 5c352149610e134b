"""The private Pulumi SDK internals the offline engine relies on (sgldeploy/offline/sdk_internals.py) are still
there, with the shape it uses, and still do what the engine needs. A failure names the internal that moved
and where in the SDK's source to look: read the new version there, adapt sdk_internals.py, then its
PULUMI_VERSION."""

from __future__ import annotations

import asyncio
import importlib
import importlib.metadata
import inspect
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pulumi
import pytest
from google.protobuf import struct_pb2

from sgldeploy.offline import sdk_internals as sdk

from .conftest import ROOT

SOURCE = (
    "the SDK's source: site-packages/pulumi/, or sdk/python/lib/pulumi/ in https://github.com/pulumi/pulumi"
)


def test_the_installed_sdk_is_the_one_the_internals_were_read_from():
    pinned = re.search(r'"pulumi==([^"]+)"', (ROOT / "pyproject.toml").read_text())
    assert pinned, (
        "pyproject.toml no longer pins pulumi==X: pin it, the offline engine relies on its internals"
    )
    installed = importlib.metadata.version("pulumi")
    assert installed == pinned.group(1) == sdk.PULUMI_VERSION, (
        f"pulumi {installed} is installed and {pinned.group(1)} pinned, but sgldeploy/offline/sdk_internals.py "
        f"was read from {sdk.PULUMI_VERSION}: re-read each internal its docstring lists in {SOURCE}, make "
        "this file pass, then set PULUMI_VERSION"
    )
    assert f"pulumi {sdk.PULUMI_VERSION}" in (sdk.__doc__ or ""), "the docstring names another SDK version"


@dataclass(frozen=True)
class Internal:
    module: str
    name: str
    check: Callable[[Any], str | None]  # what is wrong with the attribute's shape, or None

    def __str__(self) -> str:
        return f"{self.module}.{self.name}"


def callable_as(*args: Any, **kwargs: Any) -> Callable[[Any], str | None]:
    """The attribute can be called with these arguments (checked against its signature, not called)."""

    def check(value: Any) -> str | None:
        if not callable(value):
            return f"is a {type(value).__name__}, not callable"
        try:
            inspect.signature(value).bind(*args, **kwargs)
        except TypeError as err:
            return f"cannot be called as sdk_internals calls it ({err}); signature {inspect.signature(value)}"
        return None

    return check


def coroutine_function_of(*args: Any) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if not inspect.iscoroutinefunction(value):
            return "is no longer an async function"
        return callable_as(*args)(value)

    return check


def sentinel(value: Any) -> str | None:
    # 32 hex digits or a UUID: what the Go engine marshals them as (sdk/go/common/resource/properties.go).
    return None if isinstance(value, str) and re.fullmatch(r"[0-9a-f-]{32,36}", value) else f"is {value!r}"


def a_class(value: Any) -> str | None:
    return None if isinstance(value, type) else f"is a {type(value).__name__}, not a class"


def mock_monitor(value: Any) -> str | None:
    if not isinstance(value, type):
        return "is not a class"
    missing = [
        m for m in ("RegisterResource", "RegisterResourceOutputs") if not callable(getattr(value, m, None))
    ]
    if missing:
        return f"lacks {', '.join(missing)}, which the recording monitor overrides"
    return callable_as(None, object())(value.RegisterResource) or callable_as(object())(value)


def settings_object(value: Any) -> str | None:
    for name in ("rpc_manager", "outputs"):
        part = getattr(value, name, None)
        if not callable(getattr(part, "clear", None)):
            return f"has no {name}.clear()"
    return None


INTERNALS = [
    Internal("pulumi.runtime.rpc", "UNKNOWN", sentinel),
    Internal("pulumi.runtime.rpc", "_special_sig_key", sentinel),
    Internal("pulumi.runtime.rpc", "_special_secret_sig", sentinel),
    Internal(
        "pulumi.runtime.rpc", "deserialize_properties", callable_as(struct_pb2.Struct(), keep_unknowns=True)
    ),
    Internal("pulumi.runtime.rpc", "get_resource_module", callable_as("aws", "eks/cluster", "")),
    Internal("pulumi.output", "Unknown", a_class),
    Internal("pulumi._types", "resource_types", callable_as(object)),
    Internal("pulumi._types", "is_output_type", callable_as(object)),
    Internal("pulumi._types", "output_type_types", callable_as(object)),
    Internal("pulumi.runtime.mocks", "MockMonitor", mock_monitor),
    Internal(
        "pulumi.runtime.mocks",
        "set_mocks",
        callable_as(object(), project="p", stack="s", preview=True, logger=None, monitor=None),
    ),
    Internal("pulumi.runtime.settings", "SETTINGS", settings_object),
    Internal("pulumi.runtime.settings", "set_root_resource", callable_as(None)),
    Internal("pulumi.runtime.stack", "run_in_stack", coroutine_function_of(lambda: None)),
    Internal("pulumi.runtime.sync_await", "_sync_await", callable_as(object())),
]


@pytest.mark.parametrize("internal", INTERNALS, ids=str)
def test_each_internal_is_where_it_was_with_the_shape_used(internal: Internal):
    where = f"{internal.module.replace('.', '/').removeprefix('pulumi/')}.py in {SOURCE}"
    try:
        module = importlib.import_module(internal.module)
    except ImportError:
        pytest.fail(
            f"pulumi {pulumi_version()}: module {internal.module} is gone; find {internal.name} in {SOURCE}"
        )
    if not hasattr(module, internal.name):
        pytest.fail(f"pulumi {pulumi_version()}: {internal} is gone (was in {where}); see sdk_internals.py")
    problem = internal.check(getattr(module, internal.name))
    assert problem is None, f"pulumi {pulumi_version()}: {internal} {problem}; look at {where}"


def pulumi_version() -> str:
    return importlib.metadata.version("pulumi")


def test_the_envelope_and_unknown_sentinels_are_the_wire_protocols():
    """Values from the engine's Go source (sdk/go/common/resource/properties.go SigKey, SecretSig;
    sdk/go/common/resource/plugin/rpc.go UnknownStringValue), not from the Python SDK under test."""
    assert sdk.SIG_KEY == "4dabf18193072939515e22adb298388d"
    assert sdk.SECRET_SIG == "1b47061264138c4ac30d75fd1eb44270"
    assert sdk.WIRE_UNKNOWN == "04da6b54-80e4-46f7-96ec-b56ff0331ba9"


def test_deserialize_keeps_unknowns_and_secret_envelopes():
    struct = struct_pb2.Struct()
    struct.update(
        {"later": sdk.WIRE_UNKNOWN, "token": {sdk.SIG_KEY: sdk.SECRET_SIG, "value": "s"}, "replicas": 2}
    )
    values = sdk.deserialize(struct)
    assert sdk.is_unknown(values["later"]) and not sdk.is_unknown(values["replicas"])
    assert sdk.is_secret(values["token"]) and values["token"]["value"] == "s"
    assert not sdk.is_secret({"value": "s"}) and not sdk.is_unknown("04da6b54")


def test_output_types_name_each_output_and_nested_fields():
    import pulumi_aws  # noqa: F401  (registers the aws resource modules)

    types = sdk.resource_output_types("aws:eks/cluster:Cluster")
    assert {"arn", "endpoint", "vpcConfig"} <= set(types)
    vpc = typing_inner(types["vpcConfig"])
    assert sdk.is_output_type(vpc) and not sdk.is_output_type(str)
    assert {"vpcId", "clusterSecurityGroupId", "subnetIds"} <= set(sdk.output_type_fields(vpc))
    assert sdk.resource_output_types("sgldeploy:index:ModelDeployment") == {}  # a component: no types


def typing_inner(typ: Any) -> Any:
    """`X` from `Output[X]`, `Optional[X]` or `X`."""
    import typing

    args = [a for a in typing.get_args(typ) if a is not type(None)]
    return typing_inner(args[0]) if args else typ


# ---- what the engine needs from a run --------------------------------------------------------------------


class _Echo(pulumi.runtime.Mocks):
    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        return "", {**args.inputs, "later": sdk.WIRE_UNKNOWN}  # as a provider previews a computed output

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        return {}, []


class _Recorder(sdk.MockMonitor):
    def __init__(self) -> None:
        super().__init__(_Echo())
        self.registered: list[tuple[str, str, Any]] = []  # (type, parent, inputs)

    def RegisterResource(self, request: Any) -> Any:
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            self.registered.append((request.type, request.parent, sdk.deserialize(request.object)))
        return response


def two_resources() -> None:
    """Two resources, the second fed an output of the first (`later`, None: an output to be read back)."""
    first = pulumi.CustomResource(
        "test:index:Thing", "first", {"size": 3, "token": pulumi.Output.secret("s"), "later": None}
    )
    pulumi.CustomResource("test:index:Thing", "second", {"fromFirst": first.later})  # type: ignore[attr-defined]


def never_finishes() -> None:
    pulumi.export("never", pulumi.Output.from_input(asyncio.get_event_loop().create_future()))


def run(program: Callable[[], None], timeout: float = 30) -> _Recorder:
    recorder = _Recorder()
    loop = sdk.start_run(recorder, "proj", "dev", logging.getLogger("test_sdk_internals"))
    try:
        sdk.run_in_new_stack(program, timeout)
    finally:
        loop.close()
    return recorder


def test_a_run_records_under_the_programs_own_stack_and_a_hung_run_leaves_nothing_behind():
    with pytest.raises(TimeoutError):  # the engine turns this into one line for people
        run(never_finishes, timeout=0.5)
    recorder = run(two_resources)  # a second run in the process: nothing left pending by the first
    stack = "urn:pulumi:dev::proj::pulumi:pulumi:Stack::proj-dev"  # not nested in set_mocks' own stack
    assert [(t, parent) for t, parent, _ in recorder.registered] == [("test:index:Thing", stack)] * 2
    first, second = (inputs for _, _, inputs in recorder.registered)
    assert first["size"] == 3 and sdk.is_secret(first["token"])
    assert sdk.is_unknown(second["fromFirst"])  # preview: an output the provider computes is unknown
    again = run(two_resources).registered  # and again: the same two, nothing doubled
    assert [(t, parent) for t, parent, _ in again] == [("test:index:Thing", stack)] * 2
