"""The SGLang router in front of a deployment's replicas (`algorithm: cache-aware`), or in PD mode in front of a
disaggregated deployment's two roles: its service account and read-only pod access for discovery, the Deployment
and Service, a ServiceMonitor for its metrics and, with more than one router pod, a disruption budget. Specs in
sgldeploy/builders/router.py."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from sgldeploy.builders import router
from sgldeploy.models.sizing import Sizing
from sgldeploy.spec import DeploymentSpec


@dataclass(frozen=True)
class RouterArgs:
    spec: DeploymentSpec
    sizing: Sizing
    namespace: pulumi.Input[str]
    namespace_name: str
    multi_node: bool
    api_key_secret: str | None
    """The Secret holding the deployment's API key; None when auth is none."""
    track_labels: dict[str, str] | None = None
    """The active track's labels (sgldeploy.builders.rollout): with blue-green only its pods get traffic."""
    monitoring_crds: list[Any] | None = None
    """None: no Prometheus operator, so no ServiceMonitor; else the release whose CRDs come first (or [])."""
    pd_roles: dict[str, tuple[DeploymentSpec, Sizing]] | None = None
    """A disaggregated deployment's roles (prefill, decode: each one's spec and sizing), for the router in PD
    mode; None for one in front of plain replicas."""


class Router(pulumi.ComponentResource):
    service_name: str

    def __init__(self, name: str, args: RouterArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("sgldeploy:traffic:Router", name, None, opts)
        dep = args.spec
        self.service_name = router.name(dep)
        metadata = {"name": self.service_name, "namespace": args.namespace, "labels": router.labels(dep)}
        binding = self._discovery_access(name, args, metadata)
        self.deployment = self._deployment(name, args, metadata, binding)
        k8s.core.v1.Service(
            f"{name}-service", metadata=metadata, spec=router.service_spec(dep), opts=self._named()
        )
        if dep.endpoint.router.replicas > 1:
            self._disruption_budget(name, args, metadata)
        if args.monitoring_crds is not None:
            self._service_monitor(name, args, metadata, args.monitoring_crds)
        self.register_outputs({"serviceName": self.service_name})

    def _named(self, depends_on: list[pulumi.Resource] | None = None) -> pulumi.ResourceOptions:
        # Fixed names, one per deployment: a replacement must free the name first.
        return pulumi.ResourceOptions(parent=self, delete_before_replace=True, depends_on=depends_on)

    def _discovery_access(
        self, name: str, args: RouterArgs, metadata: dict[str, Any]
    ) -> k8s.rbac.v1.RoleBinding:
        """The router's service account, allowed to read the pods it discovers; returns the binding."""
        account = k8s.core.v1.ServiceAccount(
            f"{name}-service-account",
            metadata=metadata,
            automount_service_account_token=False,  # only the router's own pods mount it
            opts=self._named(),
        )
        role = k8s.rbac.v1.Role(
            f"{name}-role", metadata=metadata, rules=router.role_rules(), opts=self._named()
        )
        return k8s.rbac.v1.RoleBinding(
            f"{name}-role-binding",
            metadata=metadata,
            role_ref={"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": self.service_name},
            subjects=[{"kind": "ServiceAccount", "name": self.service_name, "namespace": args.namespace}],
            # It binds these two by name, so they exist first.
            opts=self._named(depends_on=[account, role]),
        )

    def _deployment(
        self, name: str, args: RouterArgs, metadata: dict[str, Any], binding: k8s.rbac.v1.RoleBinding
    ) -> k8s.apps.v1.Deployment:
        container_args = (
            router.pd_args(args.spec, args.pd_roles, args.namespace_name)
            if args.pd_roles
            else router.args(args.spec, args.sizing, args.namespace_name, args.multi_node, args.track_labels)
        )
        spec = router.deployment_spec(args.spec, container_args, args.api_key_secret)
        return k8s.apps.v1.Deployment(
            f"{name}-deployment",
            metadata=metadata,
            spec=spec,
            # Discovery fails without its permissions: they exist before the first pod starts.
            opts=self._named(depends_on=[binding]),
        )

    def _disruption_budget(
        self, name: str, args: RouterArgs, metadata: dict[str, Any]
    ) -> k8s.policy.v1.PodDisruptionBudget:
        """With more than one router pod, a node drain takes one at a time."""
        return k8s.policy.v1.PodDisruptionBudget(
            f"{name}-pdb",
            metadata=metadata,
            spec={"selector": {"matchLabels": router.pod_selector(args.spec)}, "maxUnavailable": 1},
            opts=self._named(),
        )

    def _service_monitor(
        self, name: str, args: RouterArgs, metadata: dict[str, Any], crds: list[Any]
    ) -> k8s.apiextensions.CustomResource:
        return k8s.apiextensions.CustomResource(
            f"{name}-service-monitor",
            api_version="monitoring.coreos.com/v1",
            kind="ServiceMonitor",
            metadata=metadata,
            spec=router.service_monitor_spec(args.spec),
            # A kind of the Prometheus operator: its CRDs must exist first.
            opts=pulumi.ResourceOptions(parent=self, depends_on=crds),
        )
