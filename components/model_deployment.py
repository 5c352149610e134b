"""One entry of `sgldeploy:deployments` and every child it declares, in the order `ModelDeployment.__init__`
declares them:

- the Secrets its pods read by name: the Hugging Face token and, with `auth: api-key`, the API key (a
  RandomPassword kept in the stack state when the stack config sets none);
- its GPU nodes (GpuNodePool, when the stack provisions them);
- the prefetch tool's ConfigMap (when the serving image runs sgldeploy's built-in tool);
- a shared weight cache on EFS or FSx for Lustre (SharedWeightCache);
- the SGLang server (SglangServer: Deployments per rollout track or a LeaderWorkerSet, and its Service);
- its autoscaler (Autoscaler, when KEDA scales it);
- the SGLang router (Router, with `algorithm: cache-aware`);
- the load balancer (Endpoint, unless `exposure: cluster`);
- the image pre-pull DaemonSet (`readiness: fast`, while running);
- metrics scrape, alerts and dashboard (Observability, with the Prometheus operator);
- a NetworkPolicy that denies all ingress and one per way in to its server and router
  (platform.network_policies);
- the PodDisruptionBudget of its server pods;
- with `verify.job`, the Job that measures the endpoint against its SLO after each update (VerifyJob).
"""

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
from components.verify_job import VerifyJob, VerifyJobArgs
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
from sgldeploy.builders.verify_job import Verification
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
    verification: Verification | None = None
    """With `verify.job`: what the in-cluster Job measures (sgldeploy.verify.plan_figures); None for none."""

    @property
    def prometheus(self) -> bool:
        """The Prometheus operator runs (installed here or existing): its kinds can be declared."""
        return self.addons is not None and bool(self.addons.prometheus)


@dataclass(frozen=True)
class _Choices:
    """What the spec and the platform decide for the deployment, derived once and read by several children."""

    multi_node: bool
    """A replica spans nodes: a LeaderWorkerSet rather than Deployments."""
    scaling: autoscaler.AutoscalerChoice
    tracks: list[rollout.Track]
    """The rollout's Deployments, the active one first; empty for a LeaderWorkerSet."""
    pool: str | None
    """The node pool of its own (sgldeploy.builders.node_pool.pool_id); None on the cluster's GPU nodes."""
    prometheus: bool
    """The Prometheus operator runs (installed here or existing): its kinds can be declared."""
    labels: dict[str, str]

    @property
    def autoscaled(self) -> bool:
        return self.scaling.kind != "none"

    @property
    def through_interceptor(self) -> bool:
        """Requests reach the server through the KEDA HTTP interceptor, which holds them while it is at zero."""
        return self.scaling.kind == "http"

    @staticmethod
    def of(args: ModelDeploymentArgs) -> _Choices:
        dep = args.spec
        multi_node = node_pool.multi_node(args.sizing)
        return _Choices(
            multi_node=multi_node,
            scaling=(
                autoscaler.for_stack(dep, args.addons)
                if args.addons is not None
                else autoscaler.AutoscalerChoice("none", "no add-ons given")
            ),
            tracks=[] if multi_node else rollout.tracks(dep, args.model.sha, dep.initial_replicas),
            pool=node_pool.pool_id(args.namespace_name, dep) if _own_nodes(args) else None,
            prometheus=args.prometheus,
            labels=sglang_server.labels(dep),
        )


class ModelDeployment(pulumi.ComponentResource):
    """One model deployment: the children the module docstring lists, each declared by one step below."""

    server: SglangServer
    api_key: pulumi.Output[str] | None
    """The key clients send as `Authorization: Bearer …`, a secret output; None when auth is none."""
    node_pool: GpuNodePool | None
    cache: SharedWeightCache | None
    autoscaler: Autoscaler | None
    router: Router | None
    # No attribute takes the name of a facts key (`endpoint`, `model`, ...): the facts are the component's
    # inputs, and Pulumi resolves each of them onto the attribute of its name.

    def __init__(self, name: str, args: ModelDeploymentArgs, opts: pulumi.ResourceOptions | None = None):
        # The facts are the component's inputs, so CrossGuard policies and the offline plan read the same values.
        super().__init__("sgldeploy:serving:ModelDeployment", name, args.facts, opts)
        dep = args.spec
        _validate(args)
        choices = _Choices.of(args)
        hf_secret = self._hf_token_secret(name, args, choices)
        self.api_key = self._api_key(name, args)
        api_secret = self._api_key_secret(name, args, choices, self.api_key)
        self.node_pool = self._node_pool(name, args, choices.pool)
        refs = sglang_server.SecretRefs(
            hf_token=f"{dep.name}-hf-token" if hf_secret else None,
            api_key=f"{dep.name}-api-key" if api_secret else None,
        )
        # What the pods read by name (the Secrets, the tool's ConfigMap) exists before them.
        pod_inputs: list[pulumi.Resource] = [
            s for s in (hf_secret, api_secret, self._prefetch_tool(name, args)) if s is not None
        ]
        self.cache = self._shared_cache(name, args, refs, pod_inputs)
        # Pods roll only once the commit is in the shared cache.
        cache_filled = [self.cache.job] if self.cache is not None else []
        self.server = self._server(name, args, choices, refs, [*pod_inputs, *cache_filled])
        self.autoscaler = self._autoscaler(name, args, choices)
        self.router = self._router(name, args, choices, refs, api_secret)
        self._endpoint(name, args, choices)
        self._image_prepull(name, args, choices)
        self._observability(name, args, choices)
        self._network_policies(name, args, choices)
        self._disruption_budget(name, args, choices)
        self._verify_job(name, args, choices, [s for s in (api_secret,) if s is not None])
        self.register_outputs(
            {**(args.facts or {}), "serviceName": self.server.service_name, "apiKey": self.api_key}
        )

    def _hf_token_secret(
        self, name: str, args: ModelDeploymentArgs, choices: _Choices
    ) -> k8s.core.v1.Secret | None:
        """HF_TOKEN for the pods and the prefetch Job; None for public models without a token."""
        if args.hf_token is None:
            return None
        secret_name = f"{args.spec.name}-hf-token"
        return self._secret(f"{name}-hf-token", secret_name, "HF_TOKEN", args.hf_token, args, choices)

    def _api_key(self, name: str, args: ModelDeploymentArgs) -> pulumi.Output[str] | None:
        return client_api_key(self, name, args.spec, args.api_key)

    def _api_key_secret(
        self, name: str, args: ModelDeploymentArgs, choices: _Choices, key: pulumi.Output[str] | None
    ) -> k8s.core.v1.Secret | None:
        """API_KEY for SGLang and the router to check requests against; None with auth none."""
        if key is None:
            return None
        secret_name = f"{args.spec.name}-api-key"
        return self._secret(f"{name}-api-key-secret", secret_name, "API_KEY", key, args, choices)

    def _secret(
        self,
        resource_name: str,
        secret_name: str,
        key: str,
        value: pulumi.Output[str],
        args: ModelDeploymentArgs,
        choices: _Choices,
    ) -> k8s.core.v1.Secret:
        return named_secret(self, resource_name, secret_name, {key: value}, args.namespace, choices.labels)

    def _node_pool(self, name: str, args: ModelDeploymentArgs, pool: str | None) -> GpuNodePool | None:
        """GPU nodes of its own; None when it runs on GPU nodes the cluster already has."""
        if pool is None or args.nodes is None or args.network is None:
            return None
        return GpuNodePool(
            f"{name}-nodes",
            GpuNodePoolArgs(
                spec=args.spec,
                sizing=args.sizing,
                pool=pool,
                provisioner=args.nodes.provisioner,
                cluster_name=args.nodes.cluster_name,
                network=args.network,
                node_role_name=args.nodes.node_role_name,
                node_role_arn=args.nodes.node_role_arn,
                tags=args.tags or {},
                crds=installed(args, "karpenter"),
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _prefetch_tool(self, name: str, args: ModelDeploymentArgs) -> k8s.core.v1.ConfigMap | None:
        """The prefetch tool as a file for the serving image to run (no image of sgldeploy's own needed); None
        when the image brings its own."""
        if not weight_cache.builtin_tool(args.spec):
            return None
        tool = weight_cache.tool_config_map(args.spec)
        return k8s.core.v1.ConfigMap(
            f"{name}-prefetch-tool",
            metadata={**tool["metadata"], "namespace": args.namespace},
            data=tool["data"],
            # Its name carries the tool's sha256, so a given name never changes content, and a changed tool
            # is a replacement: Pulumi creates the new ConfigMap first, the pod templates that name it change
            # (the workload rolls, the Job is replaced), and the old one is deleted after them.
            immutable=True,
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _shared_cache(
        self,
        name: str,
        args: ModelDeploymentArgs,
        refs: sglang_server.SecretRefs,
        job_inputs: list[pulumi.Resource],
    ) -> SharedWeightCache | None:
        """The weights on EFS or FSx for Lustre, filled by a prefetch Job; None for other cache storage."""
        dep = args.spec
        if dep.cache_storage not in weight_cache.SHARED or args.network is None:
            return None
        csi_driver = "efs_csi" if dep.cache_storage == "efs" else "fsx_csi"
        return SharedWeightCache(
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
                adapters=args.sizing.adapters,
            ),
            # The Job reads the token Secret and the tool's ConfigMap, and mounts through the CSI driver.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*job_inputs, *installed(args, csi_driver)]),
        )

    def _server(
        self,
        name: str,
        args: ModelDeploymentArgs,
        choices: _Choices,
        refs: sglang_server.SecretRefs,
        pod_inputs: list[pulumi.Resource],
    ) -> SglangServer:
        # With the EFA device plugin running, replicas spanning nodes (and a disaggregated deployment's roles,
        # which send KV caches to each other) request the adapters.
        kv_transfer = args.spec.serving_role is not None
        efa_plugin = (
            (args.nodes is not None or kv_transfer)
            and args.addons is not None
            and args.addons.efa_device_plugin
        )
        # The LeaderWorkerSet CRD must exist before a workload of its kind.
        crds = installed(args, "leader_worker_set") if choices.multi_node else []
        return SglangServer(
            f"{name}-server",
            SglangServerArgs(
                spec=args.spec,
                model=args.model,
                sizing=args.sizing,
                namespace=args.namespace,
                secrets=refs,
                pool=choices.pool,
                autoscaled=choices.autoscaled,
                efa=node_pool.efa_interfaces(args.sizing, kv_transfer) if efa_plugin else 0,
                tracks=choices.tracks,
            ),
            # Pods reference the Secrets and the tool's ConfigMap by name, and a shared cache must hold the
            # commit, before they start.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*pod_inputs, *crds]),
        )

    def _autoscaler(self, name: str, args: ModelDeploymentArgs, choices: _Choices) -> Autoscaler | None:
        """KEDA's scaler of the server; None when nothing scales it (no KEDA, fixed bounds, stopped)."""
        if not choices.autoscaled:
            return None
        http = installed(args, "keda_http") if choices.through_interceptor else []
        return Autoscaler(
            f"{name}-autoscaler",
            AutoscalerArgs(
                spec=args.spec,
                sizing=args.sizing,
                kind=choices.scaling.kind,
                namespace=args.namespace,
                namespace_name=args.namespace_name,
                prometheus=args.prometheus_url,
                crds=installed(args, "keda") + http,
                workload=choices.tracks[0].name if choices.tracks else None,
            ),
            # It scales the workload, which must exist first.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.server]),
        )

    def _router(
        self,
        name: str,
        args: ModelDeploymentArgs,
        choices: _Choices,
        refs: sglang_server.SecretRefs,
        api_secret: k8s.core.v1.Secret | None,
    ) -> Router | None:
        """The SGLang router in front of the replicas; None unless `algorithm: cache-aware`."""
        if not router.enabled(args.spec):
            return None
        monitored = args.spec.observability.metrics and choices.prometheus
        return Router(
            f"{name}-router",
            RouterArgs(
                spec=args.spec,
                sizing=args.sizing,
                namespace=args.namespace,
                namespace_name=args.namespace_name,
                multi_node=choices.multi_node,
                api_key_secret=refs.api_key,
                monitoring_crds=installed(args, "prometheus") if monitored else None,
                track_labels=choices.tracks[0].labels if choices.tracks else None,
            ),
            # Its pods read the API key Secret by name; it sends to the active commit once that is ready.
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=[self.server, *(s for s in (api_secret,) if s is not None)]
            ),
        )

    def _endpoint(self, name: str, args: ModelDeploymentArgs, choices: _Choices) -> Endpoint | None:
        """The load balancer clients reach; None with `exposure: cluster`, and for a role of a disaggregated
        deployment (its PD router has the deployment's one)."""
        if args.spec.endpoint.exposure == "cluster" or args.spec.serving_role is not None:
            return None
        return Endpoint(
            f"{name}-endpoint",
            EndpointArgs(
                spec=args.spec,
                namespace=args.namespace,
                multi_node=choices.multi_node,
                through_interceptor=choices.through_interceptor,
                tags=args.tags or {},
            ),
            # The AWS Load Balancer Controller turns these into load balancers, once it runs.
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=installed(args, "aws_load_balancer_controller")
                + ([self.router] if self.router else []),
            ),
        )

    def _image_prepull(
        self, name: str, args: ModelDeploymentArgs, choices: _Choices
    ) -> k8s.apps.v1.DaemonSet | None:
        """Pulls the serving image onto every node that may run it (`readiness: fast`, while running)."""
        dep = args.spec
        if dep.readiness != "fast" or dep.state != "running":
            return None
        return k8s.apps.v1.DaemonSet(
            f"{name}-image-prepull",
            metadata={
                "name": f"{dep.name}-image-prepull",
                "namespace": args.namespace,
                "labels": choices.labels,
            },
            spec=weight_cache.prepull_daemon_set_spec(
                dep,
                node_pool.instance_type_affinity(node_pool.instance_types(args.sizing)),
                node_pool.pod_scheduling(choices.pool) if choices.pool else None,
            ),
            # Fixed name, one per deployment; a replacement must free it first.
            opts=pulumi.ResourceOptions(parent=self, delete_before_replace=True),
        )

    def _observability(self, name: str, args: ModelDeploymentArgs, choices: _Choices) -> Observability | None:
        """Scrape, alerts and dashboard; None without `observability.metrics` or the Prometheus operator."""
        if not (args.spec.observability.metrics and choices.prometheus):
            return None
        return Observability(
            f"{name}-observability",
            ObservabilityArgs(
                spec=args.spec,
                sizing=args.sizing,
                namespace=args.namespace,
                namespace_name=args.namespace_name,
                tracks=choices.tracks,
                crds=installed(args, "prometheus"),
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _network_policies(
        self, name: str, args: ModelDeploymentArgs, choices: _Choices
    ) -> list[k8s.networking.v1.NetworkPolicy]:
        """Deny all ingress, then admit what reaches the server (and the router); none when turned off."""
        if not args.network_policies or args.network is None:
            return []
        dep, vpc_cidr = args.spec, args.network.vpc_cidr
        server = (
            network_policy.role_ingress_spec(
                dep, prometheus=choices.prometheus, multi_node=choices.multi_node
            )
            if dep.serving_role
            else network_policy.server_ingress_spec(
                dep,
                vpc_cidr=vpc_cidr,
                through_interceptor=choices.through_interceptor,
                prometheus=choices.prometheus,
                multi_node=choices.multi_node,
            )
        )
        specs = {"deny-ingress": network_policy.deny_all_spec(dep), "server-ingress": server}
        if router.enabled(dep):
            specs["router-ingress"] = network_policy.router_ingress_spec(
                dep,
                vpc_cidr=vpc_cidr,
                through_interceptor=choices.through_interceptor,
                prometheus=choices.prometheus,
            )
        return network_policies(self, name, dep, args.namespace, specs)

    def _disruption_budget(
        self, name: str, args: ModelDeploymentArgs, choices: _Choices
    ) -> k8s.policy.v1.PodDisruptionBudget:
        dep = args.spec
        return k8s.policy.v1.PodDisruptionBudget(
            f"{name}-pdb",
            metadata={"name": dep.name, "namespace": args.namespace, "labels": choices.labels},
            spec=sglang_server.disruption_budget_spec(dep),
            # Fixed name, one per deployment; a replacement must free it first.
            opts=pulumi.ResourceOptions(parent=self, delete_before_replace=True),
        )

    def _verify_job(
        self, name: str, args: ModelDeploymentArgs, choices: _Choices, secrets: list[pulumi.Resource]
    ) -> VerifyJob | None:
        """The in-cluster verification, after the update reached the endpoint; None without `verify.job` (a
        disaggregated deployment's is its own)."""
        if args.verification is None or args.spec.state != "running":
            return None
        served = [r for r in (self.server, self.router, self.autoscaler) if r is not None]
        return VerifyJob(
            f"{name}-verify",
            VerifyJobArgs(
                verification=args.verification,
                sha=args.model.sha,
                namespace=args.namespace,
                namespace_name=args.namespace_name,
                through_interceptor=choices.through_interceptor,
                api_key_secret=f"{args.spec.name}-api-key" if secrets else None,
                after=[*served, *secrets],
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )


def client_api_key(
    parent: pulumi.Resource, name: str, dep: DeploymentSpec, configured: pulumi.Output[str] | None
) -> pulumi.Output[str] | None:
    """The key clients send (a secret output): the stack config's, else one generated; None with auth none."""
    if dep.endpoint.auth != "api-key":
        return None
    key = configured
    if key is None:
        # No key in the stack config: generate one and keep it, secret, in the stack state.
        key = random.RandomPassword(
            f"{name}-api-key", length=48, special=False, opts=pulumi.ResourceOptions(parent=parent)
        ).result
    return pulumi.Output.secret(key)


def named_secret(
    parent: pulumi.Resource,
    resource_name: str,
    secret_name: str,
    data: dict[str, pulumi.Output[str]],
    namespace: pulumi.Input[str],
    labels: dict[str, str],
) -> k8s.core.v1.Secret:
    return k8s.core.v1.Secret(
        resource_name,
        metadata={"name": secret_name, "namespace": namespace, "labels": labels},
        type="Opaque",
        string_data={k: pulumi.Output.secret(v) for k, v in data.items()},  # type: ignore[arg-type]  # the stub infers Never
        # Pods reference the Secret by this fixed name; a replacement must free it first.
        opts=pulumi.ResourceOptions(parent=parent, delete_before_replace=True),
    )


def network_policies(
    parent: pulumi.Resource,
    name: str,
    dep: DeploymentSpec,
    namespace: pulumi.Input[str],
    specs: dict[str, dict[str, Any]],
) -> list[k8s.networking.v1.NetworkPolicy]:
    """One NetworkPolicy per spec, named `<deployment>-<key>`."""
    labels = sglang_server.labels(dep, "network-policy")
    return [
        k8s.networking.v1.NetworkPolicy(
            f"{name}-{key}",
            metadata={"name": f"{dep.name}-{key}", "namespace": namespace, "labels": labels},
            spec=spec,
            opts=pulumi.ResourceOptions(parent=parent),
        )
        for key, spec in specs.items()
    ]


def _validate(args: ModelDeploymentArgs) -> None:
    dep = args.spec
    if dep.cache_storage in weight_cache.SHARED and args.network is None:
        raise ValueError(f"{dep.name}: a {dep.cache_storage} weight cache needs the cluster network")


def _own_nodes(args: ModelDeploymentArgs) -> bool:
    """The deployment declares a node pool of its own (the stack's provisioner, in the cluster's network)."""
    return args.nodes is not None and args.network is not None


def installed(args: ModelDeploymentArgs, addon: str) -> list[Any]:
    """The add-on's Helm release when this stack installs it; nothing when it already exists or is unused."""
    release = args.addon_releases.get(addon)
    return [release] if release is not None else []
