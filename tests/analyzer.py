"""The CrossGuard pack driven as the Pulumi CLI drives a Python policy pack, over its gRPC protocol.

How the CLI does it (pulumi/pulumi, sdk/go/common/resource/plugin/analyzer_plugin.go, NewPolicyAnalyzer; the
`pulumi-analyzer-policy-python` script in sdk/python/dist; pkg/resource/deploy/step_generator.go):
- it runs `<virtualenv>/bin/python -u -m pulumi.policy <engine address> .` in the pack's directory, with
  PULUMI_CONFIG, PULUMI_PROJECT, PULUMI_STACK, PULUMI_DRY_RUN and PULUMI_ORGANIZATION set, and reads the port
  the pack prints;
- Handshake (pulumi_policy 1.21.0 does not implement it; the CLI then carries on), ConfigureStack,
  GetAnalyzerInfo, then Configure with every policy's level and properties: the schema's defaults, then the
  `--policy-pack-config` file's "all" level, then its per-policy values (ReconcilePolicyPackConfig);
- per resource, Remediate then Analyze with its inputs, and at the end AnalyzeStack with every resource's
  state (its outputs), values not known yet sent as unknown sentinels, secrets as secret envelopes;
- a diagnostic of Analyze is reported for the analyzed resource's URN; one of AnalyzeStack for its own URN
  (none: the stack).

Here the process is this test environment's Python (the project's .venv holds pulumi-policy and sgldeploy,
as policies/venv does), and the engine address is a closed port: the pack never calls the engine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import grpc
from google.protobuf import empty_pb2, json_format, struct_pb2
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc

from sgldeploy.offline.engine import SECRET, Registration
from sgldeploy.offline.render import PROJECT, Plan
from sgldeploy.offline.sdk_internals import WIRE_UNKNOWN

from .conftest import ROOT

PACK_DIR = ROOT / "policies"
ENGINE_ADDRESS = "127.0.0.1:1"
ORGANIZATION = "organization"
LEVELS = {
    analyzer_pb2.ADVISORY: "advisory",
    analyzer_pb2.MANDATORY: "mandatory",
    analyzer_pb2.REMEDIATE: "remediate",
    analyzer_pb2.DISABLED: "disabled",
}
CODES = {name: code for code, name in LEVELS.items()}
APPLIED = "value-known-after-apply"  # what a value unknown at preview holds once applied

Verdict = tuple[str, str, str, str]  # policy, level, resource URN ("" for the stack), message


def struct(value: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(value)
    return out


def applied(value: Any) -> Any:
    """The same properties once applied: every unknown value known."""
    if isinstance(value, dict):
        return {k: applied(v) for k, v in value.items()}
    if isinstance(value, list):
        return [applied(v) for v in value]
    return APPLIED if value == WIRE_UNKNOWN else value


class Analyzer:
    def __init__(self, stub: analyzer_pb2_grpc.AnalyzerStub, dry_run: bool):
        self.stub = stub
        self.dry_run = dry_run
        self.descriptions: dict[str, str] = {}

    def handshake(self) -> None:
        request = analyzer_pb2.AnalyzerHandshakeRequest(
            engine_address=ENGINE_ADDRESS, root_directory=str(PACK_DIR), program_directory=str(PACK_DIR)
        )
        try:
            self.stub.Handshake(request, timeout=30)
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.UNIMPLEMENTED:  # the CLI tolerates only this
                raise

    def configure_stack(self, plan: Plan) -> None:
        secret_keys = list(plan.stack.secret_keys)
        self.stub.ConfigureStack(
            analyzer_pb2.AnalyzerStackConfigureRequest(
                stack=plan.stack.stack,
                project=PROJECT,
                organization=ORGANIZATION,
                dry_run=self.dry_run,
                config={k: SECRET if k in secret_keys else v for k, v in plan.stack.config.items()},
                config_secret_keys=secret_keys,
            ),
            timeout=30,
        )

    def info(self) -> analyzer_pb2.AnalyzerInfo:
        info = self.stub.GetAnalyzerInfo(empty_pb2.Empty(), timeout=30)
        self.descriptions = {p.name: p.description for p in info.policies}
        return info

    def configure(self, info: analyzer_pb2.AnalyzerInfo, policy_config: dict[str, Any]) -> None:
        """Configure every policy as the CLI reconciles a --policy-pack-config file with the pack's info."""
        every = policy_config.get("all")
        reconciled = {}
        for p in info.policies:
            schema = json_format.MessageToDict(p.configSchema.properties)
            level = every or LEVELS[p.enforcementLevel]
            properties = {k: s["default"] for k, s in schema.items() if "default" in s}
            given = policy_config.get(p.name, {})
            given = {"enforcementLevel": given} if isinstance(given, str) else dict(given)
            level = given.pop("enforcementLevel", level)
            reconciled[p.name] = analyzer_pb2.PolicyConfig(
                enforcementLevel=CODES[level], properties=struct({**properties, **given})
            )
        self.stub.Configure(analyzer_pb2.ConfigureAnalyzerRequest(policyConfig=reconciled), timeout=30)

    def analyze(self, r: Registration, provider: Registration | None, known: bool) -> list[Verdict]:
        props = applied(r.wire_inputs) if known else r.wire_inputs
        request = analyzer_pb2.AnalyzeRequest(
            type=r.type,
            name=r.name,
            urn=r.urn,
            properties=struct(props),
            options=analyzer_pb2.AnalyzerResourceOptions(
                parent=r.parent or "", ignoreChanges=r.ignore_changes
            ),
        )
        if provider is not None:
            provider_props = applied(provider.wire_inputs) if known else provider.wire_inputs
            request.provider.CopyFrom(
                analyzer_pb2.AnalyzerProviderResource(
                    type=provider.type,
                    name=provider.name,
                    urn=provider.urn,
                    properties=struct(provider_props),
                )
            )
        self.stub.Remediate(request, timeout=30)
        response = self.stub.Analyze(request, timeout=30)
        return [self.verdict(d, r.urn) for d in response.diagnostics]

    def analyze_stack(self, resources: list[analyzer_pb2.AnalyzerResource]) -> list[Verdict]:
        response = self.stub.AnalyzeStack(analyzer_pb2.AnalyzeStackRequest(resources=resources), timeout=60)
        return [self.verdict(d, d.urn) for d in response.diagnostics]

    def verdict(self, d: analyzer_pb2.AnalyzeDiagnostic, urn: str) -> Verdict:
        """A diagnostic as the plan reports it: the rule's message without what pulumi_policy adds in front
        (the policy's description, or its "can't run policy" text for values it could not judge)."""
        described = self.descriptions[d.policyName] + "\n"
        cannot = (
            f"can't run policy '{d.policyName}' from policy pack '{d.policyPackName}@v{d.policyPackVersion}' "
            "during preview: "
        )
        for prefix in (described, cannot):
            if d.message.startswith(prefix):
                return d.policyName, LEVELS[d.enforcementLevel], urn, d.message[len(prefix) :]
        raise AssertionError(f"unexpected diagnostic message: {d.message!r}")

    def preview(self, plan: Plan, policy_config: dict[str, Any], known: bool = False) -> list[Verdict]:
        """Every verdict of one `pulumi preview --policy-pack` of `plan`'s stack (`known`: of `pulumi up`,
        every value known)."""
        self.configure_stack(plan)
        self.configure(self.info(), policy_config)
        stack_urn = (
            f"urn:pulumi:{plan.stack.stack}::{PROJECT}::pulumi:pulumi:Stack::{PROJECT}-{plan.stack.stack}"
        )
        stack = Registration(
            stack_urn, "pulumi:pulumi:Stack", f"{PROJECT}-{plan.stack.stack}", None, False, None, {}
        )
        stack.wire_state = plan.recording.wire_outputs
        resources = [stack, *plan.recording.resources]
        by_urn = {r.urn: r for r in resources}
        verdicts = []
        for r in resources:
            provider = by_urn.get((r.provider or "").rsplit("::", 1)[0])
            verdicts += self.analyze(r, provider, known)
        verdicts += self.analyze_stack(
            [
                analyzer_pb2.AnalyzerResource(
                    type=r.type,
                    name=r.name,
                    urn=r.urn,
                    parent=r.parent or "",
                    dependencies=r.dependencies,
                    properties=struct(applied(r.wire_state) if known else r.wire_state),
                )
                for r in resources
            ]
        )
        return sorted(verdicts)


@contextmanager
def running_pack(dry_run: bool = True) -> Iterator[Analyzer]:
    """The pack started as `pulumi preview` (dry_run) or `pulumi up` starts it."""
    env = {
        **os.environ,
        "PULUMI_PROJECT": PROJECT,
        "PULUMI_STACK": "analyzer",
        "PULUMI_DRY_RUN": "true" if dry_run else "false",
        "PULUMI_ORGANIZATION": ORGANIZATION,
        "PULUMI_CONFIG": json.dumps({"aws:region": "us-east-1"}),
    }
    with tempfile.TemporaryFile() as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-u", "-m", "pulumi.policy", ENGINE_ADDRESS, "."],
            cwd=PACK_DIR,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=env,
        )
        try:
            assert proc.stdout is not None
            port = proc.stdout.readline().decode().strip()
            if not port.isdigit():
                stderr.seek(0)
                raise AssertionError(f"the pack did not start: {stderr.read().decode()}")
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                yield Analyzer(analyzer_pb2_grpc.AnalyzerStub(channel), dry_run)
        finally:
            proc.kill()
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


def plan_verdicts(plan: Plan) -> list[Verdict]:
    return sorted((v.policy, v.level, v.resource, v.message) for v in plan.violations)
