"""A deployment's metrics scrape, alerts and dashboard (specs in sgldeploy/builders/observability.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from sgldeploy.builders import node_pool, observability
from sgldeploy.builders.rollout import Track
from sgldeploy.models.sizing import Sizing
from sgldeploy.spec import DeploymentSpec


@dataclass(frozen=True)
class ObservabilityArgs:
    spec: DeploymentSpec
    sizing: Sizing
    """The placement (one node per replica or several) and the rollout deadline the not-ready alert waits out."""
    namespace: pulumi.Input[str]
    namespace_name: str
    tracks: list[Track] = field(default_factory=list)
    """The rollout's Deployments, the active one first (sgldeploy.builders.rollout.tracks); empty for a LeaderWorkerSet
    or one Deployment named after the deployment."""
    crds: list[Any] = field(default_factory=list)
    """The Prometheus operator's Helm release when this stack installs it: its CRDs come first."""


class Observability(pulumi.ComponentResource):
    def __init__(self, name: str, args: ObservabilityArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("sgldeploy:observability:Observability", name, None, opts)
        dep = args.spec
        targets = observability.workloads(
            dep, args.namespace_name, node_pool.multi_node(args.sizing), args.tracks
        )
        labels = observability.monitoring_labels(dep)
        metadata: dict[str, Any] = {
            "name": dep.name,
            "namespace": args.namespace,
            "labels": labels,
        }
        # ServiceMonitor and PrometheusRule are the Prometheus operator's kinds: its CRDs must exist first.
        after_crds = pulumi.ResourceOptions(parent=self, depends_on=list(args.crds))
        k8s.apiextensions.CustomResource(
            f"{name}-service-monitor",
            api_version="monitoring.coreos.com/v1",
            kind="ServiceMonitor",
            metadata=metadata,
            spec=observability.service_monitor_spec(dep),
            opts=after_crds,
        )
        k8s.apiextensions.CustomResource(
            f"{name}-alerts",
            api_version="monitoring.coreos.com/v1",
            kind="PrometheusRule",
            metadata=metadata,
            spec=observability.prometheus_rule_spec(dep, targets, args.sizing),
            opts=after_crds,
        )
        k8s.core.v1.ConfigMap(
            f"{name}-dashboard",
            metadata={
                **metadata,
                "name": f"{dep.name}-dashboard",
                "labels": {**labels, **observability.DASHBOARD_LABEL},
            },
            data=observability.dashboard_config_map_data(dep, targets),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.register_outputs({})
