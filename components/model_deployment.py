"""One entry of `sgldeploy:deployments`: its secrets, its SGLang server and its disruption budget."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from components.autoscaler import Autoscaler, AutoscalerArgs
from components.endpoint import Endpoint, EndpointArgs
from components.node_pool import GpuNodePool, GpuNodePoolArgs
from components.observability import Observability, ObservabilityArgs
from components.platform import ClusterNetwork
from components.router import Router, RouterArgs
from components.sglang_server import SglangServer, SglangServerArgs
from components.weight_cache import SharedWeightCache, SharedWeightCacheArgs
from sgldeploy.builders import (
    autoscaler,
    network_policy,
    node_pool,
    rollout,
    router,
    sglang_server,
    weight_cache,
)
from sgldeploy.models.lock import LockedModel
from sgldeploy.models.sizing import Sizing
from sgldeploy.spec import AddonsSpec, DeploymentSpec


@dataclass(frozen=True)
class NodesArgs:
    """Where the deployment's GPU node pool comes from (the platform's settings)."""

    provisioner: str  # karpenter or managed-node-group
    cluster_name: str
    node_role_name: str
    node_role_arn: pulumi.Input[str]


@dataclass(frozen=True)
class ModelDeploymentArgs:
    spec: DeploymentSpec
    model: LockedModel
    sizing: Sizing
    namespace: pulumi.Input[str]
    hf_token: pulumi.Output[str] | None
    """Hugging Face token (stack secret `sgldeploy:hfToken`); None for public models without one."""
    api_key: pulumi.Output[str] | None
    """Client API key (stack secret `sgldeploy:apiKey`); None to generate one when auth is api-key."""
    network: ClusterNetwork | None = None
    """The cluster's network, for caches on shared file systems."""
    namespace_name: str = ""
    tags: dict[str, str] | None = None
    facts: dict[str, Any] | None = None
    """Model, fit, endpoint and cost facts (sgldeploy.policy.facts), for policies to read."""
    nodes: NodesArgs | None = None
    """A node pool of its own (with `network`); None to run on GPU nodes the cluster already has."""
    addons: AddonsSpec | None = None
    """The platform's add-ons (installed or existing): KEDA for autoscaling, Prometheus for monitoring."""
    prometheus_url: str = autoscaler.DEFAULT_PROMETHEUS
    network_policies: bool = True
    """Render the deployment's NetworkPolicies (platform.network_policies)."""
    addon_releases: dict[str, Any] = field(default_factory=dict)
    """Add-ons this stack installs (ClusterAddons.releases): custom resources wait for their CRDs."""


class ModelDeployment(pulumi.ComponentResource):
    server: SglangServer
    api_key: pulumi.Output[str] | None
    """The key clients send as `Authorization: Bearer …`, a secret output; None when auth is none."""

    def __init__(self, name: str, args: ModelDeploymentArgs, opts: pulumi.ResourceOptions | None = None):
        # The facts are the component's inputs, so CrossGuard policies and the offline plan read the same values.
        super().__init__("sgldeploy:serving:ModelDeployment", name, args.facts, opts)
        dep = args.spec
        child = pulumi.ResourceOptions(parent=self)
        labels = sglang_server.labels(dep)

        hf_secret = None
        if args.hf_token is not None:
            hf_secret = self._secret(
                f"{name}-hf-token", f"{dep.name}-hf-token", "HF_TOKEN", args.hf_token, args.namespace, labels
            )
        self.api_key = None
        api_secret = None
        if dep.endpoint.auth == "api-key":
            key = args.api_key
            if key is None:
                # No key in the stack config: generate one and keep it, secret, in the stack state.
                key = random.RandomPassword(f"{name}-api-key", length=48, special=False, opts=child).result
            self.api_key = pulumi.Output.secret(key)
            api_secret = self._secret(
                f"{name}-api-key-secret",
                f"{dep.name}-api-key",
                "API_KEY",
                self.api_key,
                args.namespace,
                labels,
            )

        self.node_pool = None
        pool = None
        if args.nodes is not None and args.network is not None:
            pool = node_pool.pool_id(args.namespace_name, dep)
            self.node_pool = GpuNodePool(
                f"{name}-nodes",
                GpuNodePoolArgs(
                    spec=dep,
                    sizing=args.sizing,
                    pool=pool,
                    provisioner=args.nodes.provisioner,
                    cluster_name=args.nodes.cluster_name,
                    network=args.network,
                    node_role_name=args.nodes.node_role_name,
                    node_role_arn=args.nodes.node_role_arn,
                    tags=args.tags or {},
                    crds=_installed(args, "karpenter"),
                ),
                opts=child,
            )
        scaling = (
            autoscaler.for_stack(dep, args.addons)
            if args.addons is not None
            else autoscaler.AutoscalerChoice("none", "no add-ons given")
        )
        refs = sglang_server.SecretRefs(
            hf_token=f"{dep.name}-hf-token" if hf_secret else None,
            api_key=f"{dep.name}-api-key" if api_secret else None,
        )
        depends = [s for s in (hf_secret, api_secret) if s is not None]
        if weight_cache.builtin_tool(dep):
            depends.append(self._prefetch_tool(name, dep, args.namespace))
        self.cache = None
        if dep.cache_storage in weight_cache.SHARED:
            if args.network is None:
                raise ValueError(f"{dep.name}: a {dep.cache_storage} weight cache needs the cluster network")
            self.cache = SharedWeightCache(
                f"{name}-cache",
                SharedWeightCacheArgs(
                    spec=dep,
                    model=args.model,
                    weights_gib=args.sizing.memory.weights_gib,
                    namespace=args.namespace,
                    network=args.network,
                    token_env=sglang_server.token_env(refs),
                    tags=args.tags or {},
                    volume_name=f"{args.namespace_name}-{dep.name}-weights",
                ),
                # The Job reads the token Secret and the tool's ConfigMap (a copy: `depends` grows below,
                # and must not include the Job).
                opts=pulumi.ResourceOptions(
                    parent=self,
                    depends_on=list(depends)
                    + _installed(args, "efs_csi" if dep.cache_storage == "efs" else "fsx_csi"),
                ),
            )
            depends.append(self.cache.job)  # pods roll only once the commit is in the cache
        if args.sizing.placement.nodes_per_replica > 1:
            depends += _installed(args, "leader_worker_set")  # the LeaderWorkerSet CRD must exist first
        tracks = (
            rollout.tracks(dep, args.model.sha, dep.initial_replicas)
            if args.sizing.placement.nodes_per_replica == 1
            else []
        )
        self.server = SglangServer(
            f"{name}-server",
            SglangServerArgs(
                spec=dep,
                model=args.model,
                sizing=args.sizing,
                namespace=args.namespace,
                secrets=refs,
                pool=pool,
                autoscaled=scaling.kind != "none",
                # With the EFA device plugin running, replicas spanning nodes request the adapters.
                efa=node_pool.efa_interfaces(args.sizing)
                if args.nodes and args.addons is not None and args.addons.efa_device_plugin
                else 0,
                tracks=tracks,
            ),
            # Pods reference the Secrets and the tool's ConfigMap by name, and a shared cache must hold the
            # commit, before they start.
            opts=pulumi.ResourceOptions(parent=self, depends_on=depends),
        )
        self.autoscaler = None
        if scaling.kind != "none":
            self.autoscaler = Autoscaler(
                f"{name}-autoscaler",
                AutoscalerArgs(
                    spec=dep,
                    sizing=args.sizing,
                    kind=scaling.kind,
                    namespace=args.namespace,
                    namespace_name=args.namespace_name,
                    prometheus=args.prometheus_url,
                    crds=_installed(args, "keda")
                    + (_installed(args, "keda_http") if scaling.kind == "http" else []),
                    workload=tracks[0].name if tracks else None,
                ),
                # It scales the workload, which must exist first.
                opts=pulumi.ResourceOptions(parent=self, depends_on=[self.server]),
            )
        self.router = None
        if router.enabled(dep):
            prometheus = dep.observability.metrics and _prometheus_operator(args)
            self.router = Router(
                f"{name}-router",
                RouterArgs(
                    spec=dep,
                    sizing=args.sizing,
                    namespace=args.namespace,
                    namespace_name=args.namespace_name,
                    multi_node=args.sizing.placement.nodes_per_replica > 1,
                    api_key_secret=refs.api_key,
                    monitoring_crds=_installed(args, "prometheus") if prometheus else None,
                    track_labels=tracks[0].labels if tracks else None,
                ),
                # Its pods read the API key Secret by name; it sends to the active commit once that is ready.
                opts=pulumi.ResourceOptions(
                    parent=self, depends_on=[self.server, *(s for s in (api_secret,) if s is not None)]
                ),
            )
        if dep.endpoint.exposure != "cluster":
            Endpoint(
                f"{name}-endpoint",
                EndpointArgs(
                    spec=dep,
                    namespace=args.namespace,
                    multi_node=args.sizing.placement.nodes_per_replica > 1,
                    through_interceptor=scaling.kind == "http",
                    tags=args.tags or {},
                ),
                # The AWS Load Balancer Controller turns these into load balancers, once it runs.
                opts=pulumi.ResourceOptions(
                    parent=self,
                    depends_on=_installed(args, "aws_load_balancer_controller")
                    + ([self.router] if self.router else []),
                ),
            )
        if dep.readiness == "fast" and dep.state == "running":
            k8s.apps.v1.DaemonSet(
                f"{name}-image-prepull",
                metadata={"name": f"{dep.name}-image-prepull", "namespace": args.namespace, "labels": labels},
                spec=weight_cache.prepull_daemon_set_spec(
                    dep,
                    node_pool.instance_type_affinity(node_pool.instance_types(args.sizing)),
                    node_pool.pod_scheduling(pool) if pool else None,
                ),
                # Fixed name, one per deployment; a replacement must free it first.
                opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(delete_before_replace=True)),
            )
        if dep.observability.metrics and _prometheus_operator(args):
            Observability(
                f"{name}-observability",
                ObservabilityArgs(
                    spec=dep,
                    sizing=args.sizing,
                    namespace=args.namespace,
                    namespace_name=args.namespace_name,
                    tracks=tracks,
                    crds=_installed(args, "prometheus"),
                ),
                opts=child,
            )
        if args.network_policies and args.network is not None:
            self._network_policies(name, args, args.network, through_interceptor=scaling.kind == "http")
        k8s.policy.v1.PodDisruptionBudget(
            f"{name}-pdb",
            metadata={"name": dep.name, "namespace": args.namespace, "labels": labels},
            spec=sglang_server.disruption_budget_spec(dep),
            # Fixed name, one per deployment; a replacement must free it first.
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(delete_before_replace=True)),
        )
        self.register_outputs(
            {**(args.facts or {}), "serviceName": self.server.service_name, "apiKey": self.api_key}
        )

    def _network_policies(
        self, name: str, args: ModelDeploymentArgs, network: ClusterNetwork, *, through_interceptor: bool
    ) -> None:
        dep = args.spec
        labels = sglang_server.labels(dep, "network-policy")
        k8s.networking.v1.NetworkPolicy(
            f"{name}-deny-ingress",
            metadata={"name": f"{dep.name}-deny-ingress", "namespace": args.namespace, "labels": labels},
            spec=network_policy.deny_all_spec(dep),
            opts=pulumi.ResourceOptions(parent=self),
        )
        k8s.networking.v1.NetworkPolicy(
            f"{name}-server-ingress",
            metadata={"name": f"{dep.name}-server-ingress", "namespace": args.namespace, "labels": labels},
            spec=network_policy.server_ingress_spec(
                dep,
                vpc_cidr=network.vpc_cidr,
                through_interceptor=through_interceptor,
                prometheus=_prometheus_operator(args),
                multi_node=args.sizing.placement.nodes_per_replica > 1,
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        if router.enabled(dep):
            k8s.networking.v1.NetworkPolicy(
                f"{name}-router-ingress",
                metadata={
                    "name": f"{dep.name}-router-ingress",
                    "namespace": args.namespace,
                    "labels": labels,
                },
                spec=network_policy.router_ingress_spec(
                    dep,
                    vpc_cidr=network.vpc_cidr,
                    through_interceptor=through_interceptor,
                    prometheus=_prometheus_operator(args),
                ),
                opts=pulumi.ResourceOptions(parent=self),
            )

    def _prefetch_tool(
        self, name: str, dep: DeploymentSpec, namespace: pulumi.Input[str]
    ) -> k8s.core.v1.ConfigMap:
        """The prefetch tool as a file for the serving image to run (no image of sgldeploy's own needed)."""
        tool = weight_cache.tool_config_map(dep)
        return k8s.core.v1.ConfigMap(
            f"{name}-prefetch-tool",
            metadata={**tool["metadata"], "namespace": namespace},
            data=tool["data"],
            # Its name carries the tool's sha256, so a given name never changes content, and a changed tool
            # is a replacement: Pulumi creates the new ConfigMap first, the pod templates that name it change
            # (the workload rolls, the Job is replaced), and the old one is deleted after them.
            immutable=True,
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _secret(
        self,
        resource_name: str,
        secret_name: str,
        key: str,
        value: pulumi.Output[str],
        namespace: pulumi.Input[str],
        labels: dict[str, str],
    ) -> k8s.core.v1.Secret:
        return k8s.core.v1.Secret(
            resource_name,
            metadata={"name": secret_name, "namespace": namespace, "labels": labels},
            type="Opaque",
            string_data={key: pulumi.Output.secret(value)},  # type: ignore[arg-type]  # the SDK's stub infers Never
            # Pods reference the Secret by this fixed name; a replacement must free it first.
            opts=pulumi.ResourceOptions(parent=self, delete_before_replace=True),
        )


def _prometheus_operator(args: ModelDeploymentArgs) -> bool:
    """The Prometheus operator runs (installed here or existing): its ServiceMonitors and rules can be declared."""
    return args.addons is not None and bool(args.addons.prometheus)


def _installed(args: ModelDeploymentArgs, addon: str) -> list[Any]:
    """The add-on's Helm release when this stack installs it; nothing when it already exists or is unused."""
    release = args.addon_releases.get(addon)
    return [release] if release is not None else []
