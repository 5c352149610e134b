"""Run the real Pulumi program in-process under the Pulumi SDK's mock engine, recording every registration.

This is how `sgldeploy plan` renders a stack without a Pulumi CLI or a cloud account: the program is the
same `__main__.py` that `pulumi preview` runs, with preview semantics: every output of a resource still to be
created that its inputs do not determine is unknown (`preview_state`), as the providers answer a preview.
Each registration is kept with its type, name, parent and inputs exactly as the engine would receive them,
with secrets replaced by a marker so no secret reaches a plan file; `normalize` makes recorded values stable
and readable for the plan JSON, the manifests and the policies. The SDK internals this relies on are in
sdk_internals.py, and nowhere else.
"""

from __future__ import annotations

import functools
import logging
import runpy
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi

from sgldeploy.offline import sdk_internals as sdk
from sgldeploy.spec.region import REGION_KEY, stack_region

SECRET = "[secret]"
UNKNOWN = "(known after apply)"
OFFLINE_ACCOUNT = "000000000000"
OFFLINE_VPC_CIDR = "10.0.0.0/16"  # what the offline plan shows for an existing cluster's VPC


@dataclass
class Registration:
    urn: str
    type: str
    name: str
    parent: str | None
    custom: bool
    provider: str | None
    inputs: dict[str, Any]
    dependencies: list[str] = field(default_factory=list)  # URNs this one waits for (depends_on, inputs)
    ignore_changes: list[str] = field(default_factory=list)  # inputs a later update leaves as they are
    # The inputs and the state (outputs) as the engine holds them, the form it sends a policy analyzer over
    # gRPC: unknowns as `sdk.WIRE_UNKNOWN`, secrets as secret envelopes whose value is SECRET, or WIRE_UNKNOWN
    # while it is not known. A component's state is what it registers as outputs.
    wire_inputs: dict[str, Any] = field(default_factory=dict)
    wire_state: dict[str, Any] = field(default_factory=dict)


@dataclass
class Recording:
    project: str
    stack: str
    resources: list[Registration] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    log: list[tuple[str, str]] = field(default_factory=list)  # (severity, message)
    wire_outputs: dict[str, Any] = field(default_factory=dict)  # the stack's outputs in wire form (wire())


def wire(value: Any) -> Any:
    """Deserialized properties in their wire form, secrets masked: see Registration.wire_inputs."""
    if isinstance(value, dict):
        if sdk.is_secret(value):
            return {**value, "value": _masked(value.get("value"))}
        return {k: wire(v) for k, v in value.items()}
    if isinstance(value, list):
        return [wire(v) for v in value]
    if sdk.is_unknown(value):
        return sdk.WIRE_UNKNOWN
    return value


def _masked(secret: Any) -> Any:
    """A secret's shape with each known value as SECRET and each unknown one as sdk.WIRE_UNKNOWN."""
    if isinstance(secret, dict):
        return {k: _masked(v) for k, v in secret.items()}
    if isinstance(secret, list):
        return [_masked(v) for v in secret]
    return sdk.WIRE_UNKNOWN if sdk.is_unknown(secret) else SECRET


def scrub(value: Any) -> Any:
    """Replace secrets and unknowns in deserialized inputs by readable markers."""
    if isinstance(value, dict):
        if sdk.is_secret(value):
            inner = value.get("value")
            # Keep the keys of a secret map (Secret.stringData) so manifests keep their shape; never values.
            return {k: SECRET for k in inner} if isinstance(inner, dict) else SECRET
        if sdk.SIG_KEY in value:  # archives, assets, resource references
            return {k: scrub(v) for k, v in value.items() if k != sdk.SIG_KEY}
        return {k: scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    if sdk.is_unknown(value):  # outputs of resources not yet created
        return UNKNOWN
    return value


_FIRST = {"apiVersion": 0, "kind": 1, "metadata": 2, "name": 3, "spec": 4}


def normalize(value: Any) -> Any:
    """Stable, readable values: the engine carries numbers as floats (3.0 → 3) and maps in no fixed order
    (keys sorted, with apiVersion, kind, metadata, name and spec first, as manifests are usually written)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: normalize(value[k]) for k in sorted(value, key=lambda k: (_FIRST.get(k, 9), k))}
    if isinstance(value, list):
        return [normalize(v) for v in value]
    return value


# How a provider previews a resource it has yet to create (its Create with preview=true), by package:
# - pulumi-kubernetes returns the inputs as they are whenever it cannot dry-run against the API server (inputs
#   with unknowns, no reachable cluster: always offline, and while a created cluster's kubeconfig is unknown):
#   https://github.com/pulumi/pulumi-kubernetes provider/pkg/provider/provider.go, Create ("skipPreview").
#   Only its top-level outputs that are not inputs (`status`) are unknown, as the SDK reads any missing output.
ECHOING_PACKAGES = frozenset({"kubernetes"})
# - every other package here (aws, random) is bridged from a Terraform provider, which previews with
#   Terraform's planned state: an attribute the configuration leaves unset and the provider computes (an id,
#   an ARN, EKS's cluster security group) is unknown, at any depth:
#   https://developer.hashicorp.com/terraform/plugin/framework/handling-data/attributes#computed. The SDK's
#   types name every attribute but not which are computed, so offline each attribute the inputs leave unset
#   reads as unknown (an optional one the provider would leave empty too: unknown, never a made-up value).


def preview_state(token: str, inputs: dict[str, Any]) -> dict[str, Any]:
    """The state a provider returns when previewing the creation of a `token` resource from `inputs`."""
    if token.split(":", 1)[0] in ECHOING_PACKAGES:
        return dict(inputs)
    types = _output_types(token)
    state: dict[str, Any] = {name: sdk.WIRE_UNKNOWN for name in types if name not in inputs}
    state.update({k: _unset_as_unknown(v, types.get(k)) for k, v in inputs.items()})
    return state


_output_types = functools.cache(sdk.resource_output_types)  # one look-up per type, however many resources


def _unset_as_unknown(value: Any, typ: Any) -> Any:
    """`value` with each attribute its output type declares and it leaves unset as unknown, at any depth."""
    if typ is None or sdk.is_unknown(value):
        return value
    origin, args = typing.get_origin(typ), typing.get_args(typ)
    if origin is typing.Union:
        kinds = [a for a in args if a is not type(None)]
        return _unset_as_unknown(value, kinds[0]) if len(kinds) == 1 else value
    if origin in (list, Sequence) and isinstance(value, list) and args:
        return [_unset_as_unknown(v, args[0]) for v in value]
    if origin in (dict, Mapping) and isinstance(value, dict) and len(args) == 2:
        return {k: _unset_as_unknown(v, args[1]) for k, v in value.items()}
    if isinstance(typ, type) and sdk.is_output_type(typ) and isinstance(value, dict):
        if sdk.SIG_KEY in value:  # a secret or an asset: left whole
            return value
        fields = sdk.output_type_fields(typ)
        return {
            **{name: sdk.WIRE_UNKNOWN for name in fields if name not in value},
            **{k: _unset_as_unknown(v, fields.get(k)) for k, v in value.items()},
        }
    return value


class _OfflineMocks(pulumi.runtime.Mocks):
    """Provider behaviour offline: resources answer as their provider's preview (`preview_state`); data
    sources answer from `invokes`."""

    def __init__(self, invokes: dict[str, Callable[[dict[str, Any]], dict[str, Any]]]):
        self.invokes = invokes

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        # No id: as in `pulumi preview`, ids of resources still to be created are unknown until apply.
        return "", preview_state(args.typ, dict(args.inputs))

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        handler = self.invokes.get(args.token)
        if handler is None:
            raise KeyError(f"the offline plan cannot answer data source {args.token}")
        return handler(dict(args.args)), []  # no check failures


class _RecordingMonitor(sdk.MockMonitor):
    def __init__(self, mocks: _OfflineMocks, recording: Recording):
        super().__init__(mocks)
        self.recording = recording
        self.by_urn: dict[str, Registration] = {}

    def RegisterResource(self, request: Any) -> Any:
        response = super().RegisterResource(request)  # type: ignore[no-untyped-call]
        if request.type != "pulumi:pulumi:Stack":
            sent = sdk.deserialize(request.object)
            registration = Registration(
                urn=response.urn,
                type=request.type,
                name=request.name,
                parent=request.parent or None,
                custom=bool(request.custom),
                provider=request.provider or None,
                inputs=scrub(sent),
                dependencies=sorted(request.dependencies),
                ignore_changes=list(request.ignoreChanges),
                wire_inputs=wire(sent),
                wire_state=wire(sdk.deserialize(response.object)) if request.custom else {},
            )
            self.recording.resources.append(registration)
            self.by_urn[registration.urn] = registration
        return response

    def RegisterResourceOutputs(self, request: Any) -> Any:
        outputs = sdk.deserialize(request.outputs)
        if request.urn.split("::")[2] == "pulumi:pulumi:Stack":  # the stack itself, not a child
            self.recording.outputs.update(scrub(outputs))
            self.recording.wire_outputs.update(wire(outputs))
        elif request.urn in self.by_urn:
            self.by_urn[request.urn].wire_state = wire(outputs)
        return super().RegisterResourceOutputs(request)  # type: ignore[no-untyped-call]


class _LogCapture(logging.Handler):
    def __init__(self, recording: Recording):
        super().__init__(logging.DEBUG)
        self.recording = recording

    def emit(self, record: logging.LogRecord) -> None:
        self.recording.log.append((record.levelname.lower(), record.getMessage()))


def default_invokes(region: str) -> dict[str, Callable[[dict[str, Any]], dict[str, Any]]]:
    """Offline answers for the data sources the program reads; obviously fake, never a real account."""

    def eks_cluster(args: dict[str, Any]) -> dict[str, Any]:
        name = args.get("name", "cluster")
        return {
            "name": name,
            "id": name,
            "arn": f"arn:aws:eks:{region}:{OFFLINE_ACCOUNT}:cluster/{name}",
            "endpoint": f"https://{name}.eks.offline.invalid",
            "certificateAuthorities": [{"data": "T0ZGTElORQ=="}],
            "version": args.get("version", ""),
            "status": "ACTIVE",
            "tags": {},
            "vpcConfig": {
                "vpcId": "vpc-offline",
                "subnetIds": ["subnet-0000000000000000a", "subnet-0000000000000000b"],
                "securityGroupIds": [],
                "clusterSecurityGroupId": "sg-offline-cluster",
                "endpointPrivateAccess": True,
                "endpointPublicAccess": False,
                "publicAccessCidrs": [],
            },
        }

    return {
        "aws:eks/getCluster:getCluster": eks_cluster,
        "aws:ec2/getVpc:getVpc": lambda args: {
            "id": args.get("id", "vpc-offline"),
            "cidrBlock": OFFLINE_VPC_CIDR,
            "cidrBlockAssociations": [],
            "tags": {},
        },
        "aws:index/getRegion:getRegion": lambda args: {"name": region, "region": region, "id": region},
        "aws:index/getAvailabilityZones:getAvailabilityZones": lambda args: {
            "id": region,
            "names": [f"{region}{z}" for z in "abc"],
            "zoneIds": [f"offline-az{i}" for i in (1, 2, 3)],
        },
        "aws:index/getCallerIdentity:getCallerIdentity": lambda args: {
            "accountId": OFFLINE_ACCOUNT,
            "arn": f"arn:aws:iam::{OFFLINE_ACCOUNT}:root",
            "userId": "offline",
        },
    }


PROGRAM_TIMEOUT_SECONDS = 300.0  # a stack of hundreds of deployments renders in seconds; a hang never ends


def _run_program(program: Path) -> None:
    runpy.run_path(str(program), run_name="__main__")


def run_program(
    program: Path,
    project: str,
    stack: str,
    config: dict[str, str],
    secret_keys: list[str],
    invokes: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] | None = None,
    timeout: float = PROGRAM_TIMEOUT_SECONDS,
) -> Recording:
    """Run `program` (a Pulumi `__main__.py`) as `pulumi preview` would, recording every registration.

    `config` maps full keys (`sgldeploy:platform`) to their string values, as the Pulumi CLI passes them.
    Exceptions the program raises (e.g. pulumi.RunError) propagate to the caller.
    """
    recording = Recording(project=project, stack=stack)
    region = stack_region(config.get(REGION_KEY))  # as the program reads it, environment included
    monitor = _RecordingMonitor(_OfflineMocks(invokes or default_invokes(region)), recording)
    logger = logging.getLogger("sgldeploy.offline")
    logger.propagate = False
    logger.setLevel(
        logging.INFO
    )  # keep info lines too (the cost summary); the CLI shows only warnings and errors
    capture = _LogCapture(recording)
    logger.addHandler(capture)
    pulumi.runtime.set_all_config(config, secret_keys)
    loop = sdk.start_run(monitor, project, stack, logger)  # afresh: plans may run many times per process
    try:
        sdk.run_in_new_stack(lambda: _run_program(program), timeout)
    except TimeoutError:
        raise pulumi.RunError(
            f"error: {program.name}: the program did not finish within {timeout:.0f} s (got a resource waiting "
            "for an output that never resolves); look for a depends_on cycle, e.g. a resource depending on its "
            "own child"
        ) from None
    finally:
        logger.removeHandler(capture)
        loop.close()
    return recording
