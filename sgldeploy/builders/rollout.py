"""Rollout strategies as tracks: the Deployments a deployment runs, each serving one model commit.

- `rolling`: one Deployment, `<name>`, updated in place (maxSurge/maxUnavailable from the spec).
- `blue-green`: one Deployment per commit, `<name>-<commit[:8]>`. A new `model.revision` declares a new
  Deployment; the Service (and the router, if any) select it only once it is ready, because they depend on it
  and Pulumi waits for a Deployment's rollout; the old one is deleted after the switch, in the same update.
  `rollout.previous_revision` keeps an old commit's Deployment with one warm replica and no traffic, so going
  back is swapping the two revisions in the spec, without a cold start.
- `canary`: the stable Deployment (`model.revision`) and a canary one (`rollout.canary_revision`), each with its
  own Service; the ALB splits traffic by weighted target groups, `canary_percent` to the canary. Promotion is a
  spec change: `model.revision` becomes the canary's commit and `canary_revision` is removed, so the canary's
  Deployment (the same name) becomes the stable one and the old one is deleted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from sgldeploy.spec import DeploymentSpec
from sgldeploy.spec.problems import Problem

COMMIT_LABEL = "sgldeploy.io/commit"
CANARY_SERVICE_SUFFIX = "-canary"
ALB_ACTION = "weighted"  # the Ingress backend that names the ALB's weighted forward action
DEFAULT_CANARY_PERCENT = 10
PREVIOUS_REPLICAS = 1  # a kept blue-green commit: warm for a rollback, serving nothing


@dataclass(frozen=True)
class Track:
    role: str  # "active" (serves, is autoscaled), "previous" (warm, no traffic) or "canary"
    sha: str
    name: str  # the Deployment's name
    replicas: int | None  # fixed replicas; None for the deployment's own count (autoscaled)
    keyed: bool  # one Deployment per commit: the commit label is part of its selector

    @property
    def labels(self) -> dict[str, str]:
        """Extra pod and selector labels: the commit, for the strategies that keep one Deployment per commit."""
        return {COMMIT_LABEL: self.sha[:12]} if self.keyed else {}


def keyed(dep: DeploymentSpec) -> bool:
    """One Deployment per commit (blue-green and canary), or one updated in place (rolling)."""
    return dep.rollout.strategy in ("blue-green", "canary")


def track_name(dep: DeploymentSpec, sha: str) -> str:
    return f"{dep.name}-{sha[:8]}"


def canary_percent(dep: DeploymentSpec) -> int:
    return dep.rollout.canary_percent or DEFAULT_CANARY_PERCENT


def tracks(dep: DeploymentSpec, active_sha: str, active_replicas: int) -> list[Track]:
    """The Deployments to declare, the active one first. `active_replicas` is what the active track starts
    with (the canary gets its share of it)."""
    if not keyed(dep):
        return [Track("active", active_sha, dep.name, None, keyed=False)]
    out = [Track("active", active_sha, track_name(dep, active_sha), None, keyed=True)]
    r = dep.rollout
    if dep.state == "stopped":
        return out
    if r.strategy == "blue-green" and r.previous_revision:
        out.append(
            Track(
                "previous",
                r.previous_revision,
                track_name(dep, r.previous_revision),
                PREVIOUS_REPLICAS,
                keyed=True,
            )
        )
    if r.strategy == "canary" and r.canary_revision:
        share = canary_replicas(dep, active_replicas)
        out.append(Track("canary", r.canary_revision, track_name(dep, r.canary_revision), share, keyed=True))
    return out


def canary_replicas(dep: DeploymentSpec, active_replicas: int) -> int:
    """The canary's share of the active track's first replicas, at least one."""
    return max(1, math.ceil(active_replicas * canary_percent(dep) / 100))


def extra_replicas(dep: DeploymentSpec, active_replicas: int) -> int:
    """Replicas beyond the active track's (a kept previous commit, a canary): what the node pool's GPU limit
    and the cost must also allow."""
    r = dep.rollout
    if dep.state == "stopped":
        return 0
    if r.strategy == "blue-green" and r.previous_revision:
        return PREVIOUS_REPLICAS
    if r.strategy == "canary" and r.canary_revision:
        return canary_replicas(dep, active_replicas)
    return 0


def switch_surge(dep: DeploymentSpec, active_replicas: int) -> int:
    """During a blue-green switch both commits run: the new one at its first replica count."""
    return active_replicas if dep.rollout.strategy == "blue-green" else 0


def weighted_action(dep: DeploymentSpec, service_port: int) -> dict[str, Any]:
    """The ALB forward action splitting traffic between the stable and the canary Services."""
    percent = canary_percent(dep)
    return {
        "type": "forward",
        "forwardConfig": {
            "targetGroups": [
                {"serviceName": dep.name, "servicePort": str(service_port), "weight": 100 - percent},
                {
                    "serviceName": f"{dep.name}{CANARY_SERVICE_SUFFIX}",
                    "servicePort": str(service_port),
                    "weight": percent,
                },
            ]
        },
    }


def split(dep: DeploymentSpec) -> bool:
    """Traffic is split between two commits (a canary is declared)."""
    return dep.rollout.strategy == "canary" and bool(dep.rollout.canary_revision) and dep.state == "running"


def problems(
    dep: DeploymentSpec, *, multi_node: bool, shared_cache: bool, router: bool, at_zero: bool, active_sha: str
) -> list[Problem]:
    """The problems (their paths inside the deployment) of rollouts this deployment's shape cannot do."""
    r = dep.rollout
    out: list[Problem] = []
    for field in ("previous_revision", "canary_revision"):
        if getattr(r, field) == active_sha:
            out.append(
                Problem(
                    f"rollout.{field}",
                    "is the commit model.revision already serves",
                    "name another commit, or remove it",
                    active_sha,
                )
            )
    if r.strategy == "rolling":
        for field in ("previous_revision", "canary_revision"):
            if getattr(r, field):
                out.append(
                    Problem(
                        f"rollout.{field}",
                        "applies only to blue-green and canary",
                        "remove it",
                        getattr(r, field),
                    )
                )
        return out
    if multi_node:
        out.append(
            Problem(
                "rollout.strategy",
                "needs a replica that fits one node (a LeaderWorkerSet rolls in place)",
                "use rolling for placements spanning nodes",
                r.strategy,
            )
        )
    extra = r.previous_revision or r.canary_revision
    if extra and shared_cache:
        out.append(
            Problem(
                "cache.storage",
                "a second commit needs its own prefetch, which shared caches do not run yet",
                "use node-local or none while a previous or canary commit is declared",
                dep.cache.storage,
            )
        )
    if r.strategy == "canary" and r.canary_revision:
        if dep.endpoint.exposure == "cluster":  # no load balancer at all: the exposure is what to change
            out.append(
                Problem(
                    "endpoint.exposure",
                    "a canary's traffic split needs an ALB (weighted target groups), and cluster has none",
                    "use exposure public or internal (with load_balancer alb)",
                    dep.endpoint.exposure,
                )
            )
        elif dep.endpoint.load_balancer != "alb":
            out.append(
                Problem(
                    "endpoint.load_balancer",
                    "a canary's traffic split needs an ALB (weighted target groups)",
                    "use load_balancer alb",
                    dep.endpoint.load_balancer,
                )
            )
        if router:
            out.append(
                Problem(
                    "endpoint.algorithm",
                    "the router cannot weight a canary",
                    "turn the router off while a canary runs (a round-robin or least-connections ALB splits)",
                    dep.endpoint.algorithm,
                )
            )
        if at_zero:
            out.append(
                Problem(
                    "scaling.min_replicas",
                    "the HTTP add-on cannot split traffic for a canary",
                    "keep at least one replica while a canary runs",
                    dep.min_replicas,
                )
            )
    return out
