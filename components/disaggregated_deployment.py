"""A deployment with `disaggregation`: its prompts prefilled on one set of replicas and decoded on another, and
every child it declares, in the order `DisaggregatedDeployment.__init__` declares them:

- the client API key (with `auth: api-key`), one for the router and both roles;
- a ModelDeployment per role, `<name>-prefill` and `<name>-decode`: each its own GPU nodes, SGLang server (in its
  disaggregation mode, with EFA and kept off the other role's nodes), autoscaler, metrics, NetworkPolicies and
  disruption budget, as any deployment;
- the API key's Secret for the router;
- the SGLang router in PD mode (Router), which discovers both roles by label and is the only way in (none while
  the deployment is stopped);
- the load balancer in front of the router (Endpoint, unless `exposure: cluster`);
- a NetworkPolicy that denies all ingress to the router's pods and one that admits its clients.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pulumi

from components.endpoint import Endpoint, EndpointArgs
from components.model_deployment import (
    ModelDeployment,
    ModelDeploymentArgs,
    client_api_key,
    installed,
    named_secret,
    network_policies,
)
from components.router import Router, RouterArgs
from components.verify_job import VerifyJob, VerifyJobArgs
from sgldeploy.builders import network_policy, router
from sgldeploy.builders.verify_job import Verification
from sgldeploy.spec import PD_ROLES, DeploymentSpec


@dataclass(frozen=True)
class DisaggregatedDeploymentArgs:
    spec: DeploymentSpec
    """The disaggregated deployment as written (with `disaggregation`)."""
    roles: dict[str, ModelDeploymentArgs]
    """Each role's deployment (prefill, decode): its spec (DeploymentSpec.role_spec), sizing and facts, with the
    platform's settings; `api_key` is the stack config's key (or None), shared by the three."""
    verification: Verification | None = None
    """With `verify.job`: what the in-cluster Job measures through the PD router; None for none."""


class DisaggregatedDeployment(pulumi.ComponentResource):
    """A disaggregated deployment: the children the module docstring lists."""

    roles: dict[str, ModelDeployment]
    router: Router | None
    """The PD router; None while the deployment is stopped (as for any deployment, its endpoint then answers
    503 itself)."""
    api_key: pulumi.Output[str] | None
    """The key clients send as `Authorization: Bearer …`, a secret output; None when auth is none."""
    service_name: pulumi.Output[str]
    """In-cluster DNS name clients use: the router's Service, `<name>-router.<namespace>.svc`."""

    def __init__(
        self, name: str, args: DisaggregatedDeploymentArgs, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("sgldeploy:serving:DisaggregatedDeployment", name, None, opts)
        dep, decode = args.spec, args.roles["decode"]
        self.service_name = pulumi.Output.concat(router.name(dep), ".", decode.namespace, ".svc")
        self.api_key = client_api_key(self, name, dep, decode.api_key)
        self.roles = {
            role: ModelDeployment(
                f"{name}-{role}",
                dataclasses.replace(args.roles[role], api_key=self.api_key),
                opts=pulumi.ResourceOptions(parent=self),
            )
            for role in PD_ROLES
        }
        self.router = self._router(name, args) if router.enabled(dep) else None
        self._endpoint(name, args)
        self._network_policies(name, args)
        self._verify_job(name, args)
        self.register_outputs({"serviceName": self.service_name, "apiKey": self.api_key})

    def _router(self, name: str, args: DisaggregatedDeploymentArgs) -> Router:
        dep, decode = args.spec, args.roles["decode"]
        secret = None
        if self.api_key is not None:
            secret = named_secret(
                self,
                f"{name}-api-key-secret",
                f"{dep.name}-api-key",
                {"API_KEY": self.api_key},
                decode.namespace,
                router.labels(dep),
            )
        monitored = dep.observability.metrics and decode.prometheus
        return Router(
            f"{name}-router",
            RouterArgs(
                spec=dep,
                sizing=decode.sizing,
                namespace=decode.namespace,
                namespace_name=decode.namespace_name,
                multi_node=False,
                api_key_secret=f"{dep.name}-api-key" if secret else None,
                monitoring_crds=installed(decode, "prometheus") if monitored else None,
                pd_roles={role: (a.spec, a.sizing) for role, a in args.roles.items()},
            ),
            # Its pods read the API key Secret by name; it sends to both roles once their servers are ready.
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[*(r.server for r in self.roles.values()), *([secret] if secret else [])],
            ),
        )

    def _verify_job(self, name: str, args: DisaggregatedDeploymentArgs) -> VerifyJob | None:
        """The in-cluster verification through the PD router, once both roles and the router rolled out."""
        if args.verification is None or self.router is None:
            return None
        decode = args.roles["decode"]
        return VerifyJob(
            f"{name}-verify",
            VerifyJobArgs(
                verification=args.verification,
                sha=decode.model.sha,
                namespace=decode.namespace,
                namespace_name=decode.namespace_name,
                through_interceptor=False,  # both roles keep a replica up
                api_key_secret=f"{args.spec.name}-api-key" if self.api_key is not None else None,
                after=[*(r.server for r in self.roles.values()), self.router],  # both roles and the router
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _endpoint(self, name: str, args: DisaggregatedDeploymentArgs) -> Endpoint | None:
        """The load balancer in front of the router; None with `exposure: cluster`."""
        dep, decode = args.spec, args.roles["decode"]
        if dep.endpoint.exposure == "cluster":
            return None
        return Endpoint(
            f"{name}-endpoint",
            EndpointArgs(
                spec=dep,
                namespace=decode.namespace,
                multi_node=False,
                through_interceptor=False,
                tags=decode.tags or {},
            ),
            # The AWS Load Balancer Controller turns these into load balancers, once it runs.
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[
                    *installed(decode, "aws_load_balancer_controller"),
                    *([self.router] if self.router else []),
                ],
            ),
        )

    def _network_policies(self, name: str, args: DisaggregatedDeploymentArgs) -> None:
        """The router's pods: no ingress but its clients' (the roles' own policies are their ModelDeployments')."""
        dep, decode = args.spec, args.roles["decode"]
        if not decode.network_policies or decode.network is None:
            return
        specs = {
            "deny-ingress": network_policy.deny_all_spec(dep),
            "router-ingress": network_policy.router_ingress_spec(
                dep, vpc_cidr=decode.network.vpc_cidr, through_interceptor=False, prometheus=decode.prometheus
            ),
        }
        network_policies(self, name, dep, decode.namespace, specs)
