"""A deployment's autoscaler: a KEDA ScaledObject on SGLang's metrics, or an HTTPScaledObject (KEDA HTTP add-on)
with the proxy Service clients call when the deployment may be at zero. Specs in sgldeploy/builders/autoscaler.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from sgldeploy.builders import autoscaler, sglang_server
from sgldeploy.models.sizing import Sizing
from sgldeploy.spec import DeploymentSpec


@dataclass(frozen=True)
class AutoscalerArgs:
    spec: DeploymentSpec
    sizing: Sizing
    kind: str  # "metrics" or "http" (sgldeploy.builders.autoscaler.AutoscalerChoice.kind)
    namespace: pulumi.Input[str]
    namespace_name: str
    prometheus: str = autoscaler.DEFAULT_PROMETHEUS
    crds: list[Any] = field(default_factory=list)
    """KEDA (and HTTP add-on) Helm releases when this stack installs them: their CRDs come first."""
    workload: str | None = None
    """The active track's Deployment (sgldeploy.builders.rollout); None for the deployment's name."""


class Autoscaler(pulumi.ComponentResource):
    proxy_host: str | None
    """For a deployment that may sleep at zero: the in-cluster name clients call (port 8080)."""

    def __init__(self, name: str, args: AutoscalerArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("sgldeploy:traffic:Autoscaler", name, None, opts)
        dep = args.spec
        metadata = {
            "name": dep.name,
            "namespace": args.namespace,
            "labels": sglang_server.labels(dep, "autoscaler"),
        }
        # ScaledObject and HTTPScaledObject are KEDA's kinds: its CRDs must exist first.
        after_crds = pulumi.ResourceOptions(parent=self, depends_on=list(args.crds))
        self.proxy_host = None
        if args.kind == "metrics":
            k8s.apiextensions.CustomResource(
                f"{name}-scaled-object",
                api_version="keda.sh/v1alpha1",
                kind="ScaledObject",
                metadata=metadata,
                spec=autoscaler.scaled_object_spec(
                    dep, args.sizing, args.namespace_name, args.prometheus, workload=args.workload
                ),
                opts=after_crds,
            )
        else:
            k8s.apiextensions.CustomResource(
                f"{name}-http-scaled-object",
                api_version="http.keda.sh/v1alpha1",
                kind="HTTPScaledObject",
                metadata=metadata,
                spec=autoscaler.http_scaled_object_spec(
                    dep, args.sizing, args.namespace_name, dep.endpoint.hostname, workload=args.workload
                ),
                opts=after_crds,
            )
            k8s.core.v1.Service(
                f"{name}-proxy",
                metadata={**metadata, "name": f"{dep.name}-proxy"},
                spec=autoscaler.proxy_service_spec(),
                # Clients address the deployment by this fixed name; a replacement must free it first.
                opts=pulumi.ResourceOptions(parent=self, delete_before_replace=True),
            )
            self.proxy_host = autoscaler.proxy_host(dep, args.namespace_name)
        self.register_outputs({"proxyHost": self.proxy_host})
