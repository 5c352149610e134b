"""The Pulumi program: stack config → validated, sized spec → the Platform and one ModelDeployment per entry →
outputs.

`pulumi preview` runs this file; so does `sgldeploy plan`, offline, under the Pulumi SDK's mock engine.
"""

import dataclasses
from pathlib import Path

import pulumi

from components.disaggregated_deployment import DisaggregatedDeployment, DisaggregatedDeploymentArgs
from components.model_deployment import ModelDeployment, ModelDeploymentArgs, NodesArgs
from components.platform import Platform, PlatformArgs
from sgldeploy import cost
from sgldeploy.builders.autoscaler import DEFAULT_PROMETHEUS
from sgldeploy.models.lock import LOCK_NAME
from sgldeploy.policy.facts import deployment_facts, platform_facts
from sgldeploy.spec.problems import InvalidInput
from sgldeploy.spec.region import stack_region
from sgldeploy.stack import SECRET_KEYS, load
from sgldeploy.verify import plan_figures


def resolve_online(repo, revision, problems, at):
    """A model missing from the lock is resolved on the Hub (HF_TOKEN or the local token cache), with a warning."""
    from sgldeploy.models import hub
    from sgldeploy.models.lock import LockedModel, LockEntryError
    from sgldeploy.spec.problems import Problem

    try:
        entry = hub.resolve(repo, revision)
    except hub.HubError as err:
        problems.append(err.at(at("model", "repo"), repo))
        return None
    try:
        model = LockedModel.from_entry(entry)
    except LockEntryError as err:  # facts sizing cannot read: a line per field, never a traceback
        problems.extend(
            Problem(
                at("model", "repo"),
                f"resolves on the Hub to facts sgldeploy cannot size: {damage.path}: {damage.what}",
                "choose another revision, or lock the model by hand (see README)",
                damage.got,
                show_got=damage.show_got,
            )
            for damage in (entry_problem.problem for entry_problem in err.problems)
        )
        return None
    pulumi.log.warn(
        f"{repo}@{revision} is not in {LOCK_NAME}; resolved on the Hub to {entry['sha']}. "
        "Run `sgldeploy lock` and commit the lock so every preview sizes the same model."
    )
    return model


config = pulumi.Config("sgldeploy")
secrets = {key: config.get_secret(key) for key in SECRET_KEYS}
stacks_dir = Path(__file__).parent / "stacks"
lock_file = Path(config.get("lockFile") or stacks_dir / LOCK_NAME)
# The region (aws:region, else the environment, as the AWS provider reads it) and the assumed traffic for the
# usage-based cost lines: resolved as `sgldeploy plan` resolves them (it passes its own usage file choice here
# as sgldeploy:usageFile), so one estimate.
region = stack_region(pulumi.Config("aws").get("region"))
try:
    stack = load(
        config.get_object("platform"),
        config.get_object("deployments"),
        lock_file,
        {key for key, value in secrets.items() if value is not None},
        resolve_online,
        plaintext_secrets={
            key
            for key, value in secrets.items()
            if value is not None and not pulumi.runtime.is_config_secret(f"sgldeploy:{key}")
        },
    )
    _, usage = cost.stack_usage(config.get("usageFile"), stacks_dir)
    estimate = cost.estimate(stack, region, usage)
except InvalidInput as invalid:  # bad input ends the program as RunError: its lines, never a traceback
    raise pulumi.RunError(str(invalid)) from None
for warning in stack.warnings:  # `pulumi preview` and `sgldeploy plan` show them as `warning: …`
    pulumi.log.warn(warning.message())

common_labels = {"app.kubernetes.io/part-of": pulumi.get_project(), "sgldeploy.io/stack": pulumi.get_stack()}
node_cache = any(item.spec.cache_storage == "node-local" for item in stack.deployments)
platform = Platform(
    "platform",
    PlatformArgs(
        spec=stack.spec.platform,
        region=region,
        labels=common_labels,
        node_cache=node_cache,
        facts=platform_facts(stack.spec.platform, region, estimate),
    ),
)


def deployment_args(item):
    """What the ModelDeployment of one loaded deployment (or of one role of a disaggregated one) is given."""
    return ModelDeploymentArgs(
        spec=item.spec,
        model=item.model,
        sizing=item.sizing,
        namespace=platform.namespace,
        hf_token=secrets["hfToken"],
        api_key=secrets["apiKey"],
        network=platform.network,
        namespace_name=stack.spec.platform.namespace,
        tags=stack.spec.platform.tags,
        facts=deployment_facts(item, stack.spec.platform, region, estimate),
        nodes=NodesArgs(
            provisioner=stack.spec.platform.node_provisioner,
            cluster_name=stack.spec.platform.cluster.name,
            node_role_name=platform.node_role_name,
            node_role_arn=platform.node_role_arn,
        ),
        addons=stack.spec.platform.addons,
        prometheus_url=stack.spec.platform.prometheus_url or DEFAULT_PROMETHEUS,
        addon_releases=platform.addons.releases,
        network_policies=stack.spec.platform.network_policies,
    )


def summarize(item, deployment, service_name):
    """The deployment's line in the `deployments` output, and its cost in the log."""
    placement = item.sizing.placement
    spend = estimate.deployment_totals(item.spec.name)
    pulumi.log.info(f"cost {cost.one_line(item.spec.name, spend)}", deployment)
    summaries[item.spec.name] = {
        "model": item.spec.model.repo,
        "revision": item.model.sha,
        "serviceName": service_name,
        "instanceType": placement.instance_type,
        "gpusPerReplica": placement.gpus_per_replica,
        "minReplicas": item.spec.min_replicas,
        "maxReplicas": item.spec.max_replicas,
        "estimatedMonthlyCostMin": spend["monthly_usd_min"],
        "estimatedMonthlyCostMax": spend["monthly_usd_max"],
        "nodePool": deployment.node_pool.name if deployment.node_pool is not None else None,
    }


summaries, api_keys, roles = {}, {}, {}
kubernetes = pulumi.ResourceOptions(providers={"kubernetes": platform.provider})
for item in stack.deployments:
    role = item.spec.serving_role
    if role is not None:  # declared with the other role, below
        roles.setdefault(role.deployment, {})[role.role] = item
        continue
    verification = plan_figures.job_verification(stack, item.spec, region)
    deployment = ModelDeployment(
        item.spec.name,
        dataclasses.replace(deployment_args(item), verification=verification),
        opts=kubernetes,
    )
    summarize(item, deployment, deployment.server.service_name)
    if deployment.api_key is not None:
        api_keys[item.spec.name] = deployment.api_key
for spec in stack.spec.deployments:
    if spec.name not in roles:
        continue
    items = roles[spec.name]
    disaggregated = DisaggregatedDeployment(
        spec.name,
        DisaggregatedDeploymentArgs(
            spec=spec,
            roles={r: deployment_args(i) for r, i in items.items()},
            verification=plan_figures.job_verification(stack, spec, region),
        ),
        opts=kubernetes,
    )
    for r, item in items.items():  # clients reach each role through the router
        summarize(item, disaggregated.roles[r], disaggregated.service_name)
    if disaggregated.api_key is not None:
        api_keys[spec.name] = disaggregated.api_key

pulumi.export("clusterName", platform.cluster_name)
pulumi.export("namespace", platform.namespace)
pulumi.export("kubeconfig", platform.kubeconfig)  # secret; `pulumi stack output kubeconfig --show-secrets`
pulumi.export("deployments", summaries)
pulumi.export("apiKeys", pulumi.Output.secret(api_keys))
# The cost estimate as outputs: `pulumi preview` shows their change, which is the cost diff (USD, 730 h/month).
stack_spend = estimate.stack_totals()
pulumi.log.info(f"cost {cost.one_line('stack', stack_spend)}")
pulumi.export("estimatedMonthlyCostMin", stack_spend["monthly_usd_min"])
pulumi.export("estimatedMonthlyCostMax", stack_spend["monthly_usd_max"])
pulumi.export("estimatedHourlyCostMin", stack_spend["hourly_usd_min"])
pulumi.export("estimatedHourlyCostMax", stack_spend["hourly_usd_max"])
