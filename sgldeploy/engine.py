"""Run the real Pulumi program in-process under the Pulumi SDK's mock engine, recording every registration.

This is how `sgldeploy plan` renders a stack without a Pulumi CLI or a cloud account: the program is the
same `__main__.py` that `pulumi preview` runs, with preview semantics (values computed by the cloud are
unknown). Each registration is kept with its type, name, parent and inputs exactly as the engine would
receive them, with secrets replaced by a marker so no secret reaches a plan file.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import runpy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import rpc, settings
from pulumi.runtime.stack import run_in_stack
from pulumi.runtime.sync_await import _sync_await

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


@dataclass
class Recording:
    project: str
    stack: str
    resources: list[Registration] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    log: list[tuple[str, str]] = field(default_factory=list)  # (severity, message)


def scrub(value: Any) -> Any:
    """Replace secrets and unknowns in deserialized inputs by readable markers."""
    if isinstance(value, dict):
        if value.get(rpc._special_sig_key) == rpc._special_secret_sig:
            inner = value.get("value")
            # Keep the keys of a secret map (Secret.stringData) so manifests keep their shape; never values.
            return {k: SECRET for k in inner} if isinstance(inner, dict) else SECRET
        if rpc._special_sig_key in value:  # archives, assets, resource references
            return {k: scrub(v) for k, v in value.items() if k != rpc._special_sig_key}
        return {k: scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    if (
        isinstance(value, pulumi.output.Unknown) or value == rpc.UNKNOWN
    ):  # outputs of resources not yet created
        return UNKNOWN
    return value


class _OfflineMocks(pulumi.runtime.Mocks):
    """Provider behaviour offline: resources echo their inputs; data sources answer from `invokes`."""

    def __init__(self, invokes: dict[str, Callable[[dict[str, Any]], dict[str, Any]]]):
        self.invokes = invokes

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        # No id: as in `pulumi preview`, ids of resources still to be created are unknown until apply.
        return "", dict(args.inputs)

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        handler = self.invokes.get(args.token)
        if handler is None:
            raise KeyError(f"the offline plan cannot answer data source {args.token}")
        return handler(dict(args.args)), []  # no check failures


class _RecordingMonitor(pulumi_mocks.MockMonitor):
    def __init__(self, mocks: _OfflineMocks, recording: Recording):
        super().__init__(mocks)
        self.recording = recording

    def RegisterResource(self, request: Any) -> Any:
        response = super().RegisterResource(request)  # type: ignore[no-untyped-call]
        if request.type != "pulumi:pulumi:Stack":
            inputs = scrub(rpc.deserialize_properties(request.object, keep_unknowns=True))
            self.recording.resources.append(
                Registration(
                    urn=response.urn,
                    type=request.type,
                    name=request.name,
                    parent=request.parent or None,
                    custom=bool(request.custom),
                    provider=request.provider or None,
                    inputs=inputs,
                    dependencies=sorted(request.dependencies),
                    ignore_changes=list(request.ignoreChanges),
                )
            )
        return response

    def RegisterResourceOutputs(self, request: Any) -> Any:
        if request.urn.split("::")[2] == "pulumi:pulumi:Stack":  # the stack itself, not a child
            outputs = rpc.deserialize_properties(request.outputs, keep_unknowns=True)
            self.recording.outputs.update(scrub(outputs))
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
                "subnetIds": ["subnet-offline-a", "subnet-offline-b"],
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


def close_leftover_event_loops() -> None:
    """Close the event loops the SDK opened in its worker threads and never closed, while their sockets are
    still open: left to interpreter shutdown, they print "Exception ignored … Invalid file descriptor". For a
    process about to exit (the CLI registers it with atexit); a later plan in the same process would find them
    closed."""
    for obj in gc.get_objects():
        if isinstance(obj, asyncio.BaseEventLoop) and not obj.is_closed() and not obj.is_running():
            obj.close()


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
    region = config.get("aws:region", "us-east-1")
    monitor = _RecordingMonitor(_OfflineMocks(invokes or default_invokes(region)), recording)
    logger = logging.getLogger("sgldeploy.offline")
    logger.propagate = False
    logger.setLevel(
        logging.INFO
    )  # keep info lines too (the cost summary); the CLI shows only warnings and errors
    capture = _LogCapture(recording)
    logger.addHandler(capture)
    pulumi.runtime.set_all_config(config, secret_keys)
    # A fresh event loop per run: the SDK keeps per-loop state, and plans may run many times per process.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    settings.SETTINGS.rpc_manager.clear()
    settings.SETTINGS.outputs.clear()
    pulumi_mocks.set_mocks(
        monitor.mocks, project=project, stack=stack, preview=True, logger=logger, monitor=monitor
    )
    # set_mocks made a root stack for unit tests; the program gets its own, as under `pulumi preview`.
    settings.set_root_resource(None)  # type: ignore[arg-type]
    try:
        _sync_await(asyncio.wait_for(run_in_stack(lambda: _run_program(program)), timeout))
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
