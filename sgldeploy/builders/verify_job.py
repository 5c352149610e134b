"""The in-cluster verification (`verify.job: true`): a Job that runs sgldeploy/verify/measure.py, from a ConfigMap,
in the serving image, once an update has reached the endpoint, and fails when the endpoint misses its SLO.

- Pulumi creates it only after the serving workload (and the router) it depends on have rolled out, and
  pulumi-kubernetes waits for a Job to complete and fails the update when it fails: `pulumi up` from CI fails
  with a missed SLO.
- Its name carries a digest of the deployment's spec, its locked commit and the measurement, so each update
  that changes what serves is measured by a new Job (a Job's template cannot change in place).
- With a canary running, it measures the canary's Service and the stable one the same way, and fails when the
  canary misses the SLO or is worse than stable by more than `verify.canary_margin_percent`: the update that
  starts a canary fails before anyone promotes it.

Pure: the URLs, the container's argv and the Job's spec.
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import sgldeploy.verify.measure as measure  # a leaf: the package above it is not
from sgldeploy.builders import autoscaler, pod_security, rollout, router, sglang_server, tool_file
from sgldeploy.builders.weight_cache import IMAGE_PYTHON
from sgldeploy.spec import DeploymentSpec

TOOL_SOURCE = Path(measure.__file__)
TOOL_KEY = "measure.py"
TOOL_VOLUME = "verify-tool"
TOOL_MOUNT = "/opt/sgldeploy-verify"
KEY_VOLUME = "api-key"
KEY_MOUNT = "/var/run/sgldeploy-api-key"
KEY_FILE = f"{KEY_MOUNT}/API_KEY"  # the Secret's key, as a file: never in the environment
COMPONENT = "verify"
MEASURE_ALLOWANCE_SECONDS = 1800
"""What the load itself may take, on top of a cold start from zero: thousands of requests of minutes each are
what the spec's `verify.requests` would have to ask for to need more."""


REQUEST_TIMEOUT_SECONDS = 600.0  # a request's longest silence, past a cold start: the ALB's idle timeout


@dataclass(frozen=True)
class Verification:
    spec: DeploymentSpec  # the deployment as the stack file names it (a disaggregated one: not a role)
    served_model: str
    settings: measure.Settings
    plan: measure.Plan

    @property
    def timeout_s(self) -> float:
        """How long a request may wait for an answer: from zero, a cold start with the autoscaler's margin."""
        cold = self.plan.cold_start_seconds or 0
        return max(REQUEST_TIMEOUT_SECONDS, cold * 4 / 3)


@functools.cache
def tool_text() -> str:
    return TOOL_SOURCE.read_bytes().decode("utf-8")


def tool_config_map(dep: DeploymentSpec) -> dict[str, Any]:
    """The measurement as a file, named by its content (a changed tool is a new ConfigMap)."""
    return tool_file.config_map(f"{dep.name}-verify-tool", labels(dep), TOOL_KEY, tool_text())


def labels(dep: DeploymentSpec) -> dict[str, str]:
    return {
        "app.kubernetes.io/instance": dep.name,
        "app.kubernetes.io/component": COMPONENT,
        "app.kubernetes.io/managed-by": "sgldeploy",
    }


def _service(name: str, namespace: str) -> str:
    return f"http://{name}.{namespace}.svc:{sglang_server.SERVICE_PORT}"


def urls(dep: DeploymentSpec, namespace: str, through_interceptor: bool) -> tuple[str, str | None]:
    """What the Job measures, and the stable commit to hold a canary against (None without a canary): the
    canary's and the stable Service; else the way in-cluster clients come in (the interceptor's host for a
    deployment that may be at zero, the router, or the Service)."""
    if rollout.split(dep):
        return _service(f"{dep.name}{rollout.CANARY_SERVICE_SUFFIX}", namespace), _service(
            dep.name, namespace
        )
    if through_interceptor:
        return f"http://{autoscaler.proxy_host(dep, namespace)}:{autoscaler.INTERCEPTOR_PORT}", None
    if router.enabled(dep):
        return _service(router.name(dep), namespace), None
    return _service(dep.name, namespace), None


def argv(v: Verification, url: str, stable: str | None, api_key: bool) -> list[str]:
    """measure.py's arguments: the verification `sgldeploy verify` would run, every setting spelled out."""
    s, t = v.settings, v.settings.targets
    out = [
        *("--url", url),
        *(("--stable-url", stable) if stable else ()),
        *("--model", v.served_model),
        *(("--api-key-file", KEY_FILE) if api_key else ()),
        *("--input-tokens", str(s.input_tokens), "--output-tokens", str(s.output_tokens)),
        *("--concurrency", str(s.concurrency), "--requests", str(s.requests)),
        *(("--ttft-p95", f"{t.ttft_p95_seconds:g}") if t.ttft_p95_seconds is not None else ()),
        *(("--itl-p95", f"{t.itl_p95_seconds:g}") if t.itl_p95_seconds is not None else ()),
        # A canary's Services are the replicas themselves: the router's admission is not theirs to show.
        *(("--admitted", str(s.admitted)) if s.admitted and not stable else ()),
        *(("--from-zero",) if s.from_zero else ()),
        *("--timeout-seconds", f"{v.timeout_s:g}"),
        *("--margin-percent", f"{v.spec.verify.canary_margin_percent:g}"),
        *("--plan", json.dumps(asdict(v.plan))),
    ]
    return out


def deadline_seconds(v: Verification) -> int:
    """How long the Job may run: a cold start from zero (with the autoscaler's own margin), then the load."""
    cold = v.plan.cold_start_seconds or 0
    return int(cold * 4 / 3) + MEASURE_ALLOWANCE_SECONDS


def job_name(dep: DeploymentSpec, sha: str, args: list[str]) -> str:
    """`<name>-verify-<digest>`: new whenever the spec, the commit, the measurement or the tool changes."""
    key = json.dumps(
        [dep.model_dump(mode="json"), sha, args, tool_file.digest(tool_text())]
    )  # fields in the models' order
    return f"{dep.name}-verify-{tool_file.digest(key)[:10]}"


def job_spec(
    dep: DeploymentSpec, args: list[str], api_key_secret: str | None, tool_map: str, deadline: int
) -> dict[str, Any]:
    """The Job: one try (a missed SLO is a verdict, not a flake to retry), bounded by `deadline` seconds."""
    mounts = [{"name": TOOL_VOLUME, "mountPath": TOOL_MOUNT, "readOnly": True}]
    volumes = [tool_file.volume(TOOL_VOLUME, tool_map, TOOL_KEY)]
    if api_key_secret:
        mounts.append({"name": KEY_VOLUME, "mountPath": KEY_MOUNT, "readOnly": True})
        # Readable by the pod's group (fsGroup nobody) and no one else.
        volumes.append({"name": KEY_VOLUME, "secret": {"secretName": api_key_secret, "defaultMode": 0o440}})
    return {
        "backoffLimit": 0,
        "activeDeadlineSeconds": deadline,
        "template": {
            "metadata": {"labels": labels(dep)},
            "spec": {
                "restartPolicy": "Never",
                # It runs only Python over the network: as nobody, unlike the SGLang server in the same image.
                **pod_security.without_api_token(
                    {**pod_security.non_root_pod(), "fsGroup": pod_security.NOBODY}
                ),
                "containers": [
                    {
                        "name": COMPONENT,
                        "image": dep.serving.image,
                        "command": [*IMAGE_PYTHON, f"{TOOL_MOUNT}/{TOOL_KEY}"],
                        "args": args,
                        "env": [{"name": "PYTHONUNBUFFERED", "value": "1"}],
                        "volumeMounts": mounts,
                        "resources": {
                            "requests": {"cpu": "1", "memory": "512Mi"},
                            "limits": {"memory": "1Gi"},
                        },
                        "securityContext": pod_security.read_only_container(),
                    }
                ],
                "volumes": volumes,
            },
        },
    }
