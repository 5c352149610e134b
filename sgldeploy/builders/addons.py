"""Cluster add-ons as data: each Helm chart pinned to an exact version (with where the version was read), its
values, and the AWS permissions its service account gets through EKS Pod Identity. Pure: no Pulumi.

Versions were read from each chart's Chart.yaml in its upstream repository (the commits next to the CRDs in
../shared/crds/ where those exist), so the custom resources sgldeploy renders match the CRDs installed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sgldeploy.builders.gpu import gpu_toleration
from sgldeploy.builders.node_pool import GPU_LABEL, POOL_LABEL
from sgldeploy.spec import AddonsSpec


@dataclass(frozen=True)
class Chart:
    addon: str  # the spec field under platform.addons
    release: str
    chart: str  # chart name, or an oci:// reference
    repository: str | None  # None for OCI charts
    version: str
    namespace: str
    service_account: str | None  # the one that gets AWS permissions, when it needs any
    why: str
    source: str


CHARTS: tuple[Chart, ...] = (
    Chart(
        "karpenter",
        "karpenter",
        "oci://public.ecr.aws/karpenter/karpenter",
        None,
        "1.14.1",
        "kube-system",
        "karpenter",
        "launches the GPU nodes each NodePool describes",
        "aws/karpenter-provider-aws charts/karpenter/Chart.yaml @1d927085 (the CRDs' commit)",
    ),
    Chart(
        "keda",
        "keda",
        "keda",
        "https://kedacore.github.io/charts",
        "2.20.2",
        "keda",
        None,
        "scales replicas on SGLang's Prometheus metrics",
        "kedacore/charts keda/Chart.yaml @1444d00",
    ),
    Chart(
        "keda_http",
        "keda-add-ons-http",
        "keda-add-ons-http",
        "https://kedacore.github.io/charts",
        "0.15.0",
        "keda",
        None,
        "holds requests while a deployment scales from zero",
        "kedacore/charts http-add-on/Chart.yaml @1444d00",
    ),
    Chart(
        "aws_load_balancer_controller",
        "aws-load-balancer-controller",
        "aws-load-balancer-controller",
        "https://aws.github.io/eks-charts",
        "3.5.0",
        "kube-system",
        "aws-load-balancer-controller",
        "turns endpoint Services and Ingresses into NLBs and ALBs",
        "kubernetes-sigs/aws-load-balancer-controller helm/aws-load-balancer-controller/Chart.yaml @225f4456",
    ),
    Chart(
        "nvidia_device_plugin",
        "nvidia-device-plugin",
        "nvidia-device-plugin",
        "https://nvidia.github.io/k8s-device-plugin",
        "0.20.0",
        "kube-system",
        None,
        "advertises nvidia.com/gpu on GPU nodes (the AL2023 NVIDIA AMI ships the driver, not the plugin)",
        "NVIDIA/k8s-device-plugin deployments/helm/nvidia-device-plugin/Chart.yaml @1b826acc",
    ),
    Chart(
        "prometheus",
        "kube-prometheus-stack",
        "kube-prometheus-stack",
        "https://prometheus-community.github.io/helm-charts",
        "88.5.3",
        "monitoring",
        None,
        "scrapes SGLang metrics for autoscaling and alerts",
        "prometheus-community/helm-charts charts/kube-prometheus-stack/Chart.yaml @cf408a29",
    ),
    Chart(
        "leader_worker_set",
        "lws",
        "oci://registry.k8s.io/lws/charts/lws",
        None,
        "0.10.0",
        "lws-system",
        None,
        "runs replicas that span several nodes",
        "kubernetes-sigs/lws site docs (install by Helm) @060ab4d",
    ),
    Chart(
        "efa_device_plugin",
        "aws-efa-k8s-device-plugin",
        "aws-efa-k8s-device-plugin",
        "https://aws.github.io/eks-charts",
        "v0.5.30",
        "kube-system",
        None,
        "advertises vpc.amazonaws.com/efa, so replicas spanning nodes talk NCCL over EFA",
        "aws/eks-charts stable/aws-efa-k8s-device-plugin/Chart.yaml @5239609",
    ),
    Chart(
        "external_secrets",
        "external-secrets",
        "external-secrets",
        "https://charts.external-secrets.io",
        "2.9.0",
        "external-secrets",
        "external-secrets",
        "syncs HF tokens held in AWS Secrets Manager",
        "external-secrets/external-secrets deploy/charts/external-secrets/Chart.yaml @cc5bfbc2",
    ),
    Chart(
        "efs_csi",
        "aws-efs-csi-driver",
        "aws-efs-csi-driver",
        "https://kubernetes-sigs.github.io/aws-efs-csi-driver/",
        "4.4.1",
        "kube-system",
        None,
        "mounts EFS weight caches (static volumes: no AWS permissions needed)",
        "kubernetes-sigs/aws-efs-csi-driver charts/aws-efs-csi-driver/Chart.yaml @a4fc6760",
    ),
    Chart(
        "fsx_csi",
        "aws-fsx-csi-driver",
        "aws-fsx-csi-driver",
        "https://kubernetes-sigs.github.io/aws-fsx-csi-driver",
        "1.17.0",
        "kube-system",
        None,
        "mounts FSx for Lustre weight caches (static volumes: no AWS permissions)",
        "kubernetes-sigs/aws-fsx-csi-driver charts/aws-fsx-csi-driver/Chart.yaml @5b227125",
    ),
)

GPU_NODE_TOLERATIONS = [gpu_toleration(), {"key": POOL_LABEL, "operator": "Exists", "effect": "NoSchedule"}]
"""The device plugins (NVIDIA's, EFA's) must run on every GPU pool despite its taints (the CSI node drivers
tolerate every taint: their values below)."""


@dataclass(frozen=True)
class ClusterFacts:
    name: str
    region: str
    account: str
    vpc_id: Any  # a string, or an output when this stack creates the VPC
    node_role_name: str
    interruption_queue: str = ""


def values(chart: Chart, cluster: ClusterFacts) -> dict[str, Any]:
    """The chart values sgldeploy sets; everything else keeps the chart's defaults."""
    if chart.addon == "karpenter":
        return {
            "settings": {"clusterName": cluster.name, "interruptionQueue": cluster.interruption_queue},
            "serviceAccount": {"name": chart.service_account},
            "controller": {
                "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "1Gi"}}
            },
        }
    if chart.addon == "aws_load_balancer_controller":
        return {
            "clusterName": cluster.name,
            "region": cluster.region,
            "vpcId": cluster.vpc_id,
            "serviceAccount": {"name": chart.service_account},
        }
    if chart.addon == "nvidia_device_plugin":
        # The chart looks for NFD labels by default; sgldeploy's GPU nodes carry their own label instead.
        return {
            "tolerations": GPU_NODE_TOLERATIONS,
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {"matchExpressions": [{"key": GPU_LABEL, "operator": "Exists"}]}
                        ]
                    }
                }
            },
        }
    if chart.addon == "prometheus":
        # Pick up every ServiceMonitor and PrometheusRule, not only those labelled for this release.
        return {
            "prometheus": {
                "prometheusSpec": {
                    "serviceMonitorSelectorNilUsesHelmValues": False,
                    "podMonitorSelectorNilUsesHelmValues": False,
                    "ruleSelectorNilUsesHelmValues": False,
                    "retention": "15d",
                }
            },
            "grafana": {"enabled": False},
        }
    if chart.addon == "external_secrets":
        return {"installCRDs": True, "serviceAccount": {"name": chart.service_account}}
    if chart.addon == "efa_device_plugin":
        return {
            "tolerations": GPU_NODE_TOLERATIONS
        }  # its default affinity already lists the EFA instance types
    if chart.addon == "efs_csi":
        # The EFS chart has no tolerateAllTaints (that is the FSx chart's key, and Helm ignores unknown keys):
        # its node DaemonSet takes node.tolerations as given (charts/aws-efs-csi-driver/values.yaml @4.4.1).
        # Every taint, as the chart's default: stated so a chart upgrade cannot strand GPU pools without it.
        return {"node": {"tolerations": [{"operator": "Exists"}]}}
    if chart.addon == "fsx_csi":
        # The FSx chart's node DaemonSet tolerates every taint when this is set (its default, stated).
        return {"node": {"tolerateAllTaints": True}}
    return {}


# ---- AWS permissions, least privilege ------------------------------------------------------------------
# Each add-on's policy follows the one its project publishes for the pinned version, statement by statement
# (the sources are named per policy); tagging is granted only at creation or on resources already in scope, so
# no role can tag a resource into the scope its tag-conditioned statements allow.


def _statement(
    sid: str, actions: list[str], resources: list[str], condition: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "Sid": sid,
        "Effect": "Allow",
        "Action": actions,
        "Resource": resources,
        **({"Condition": condition} if condition else {}),
    }


KARPENTER_CREATE_ACTIONS = ["RunInstances", "CreateFleet", "CreateLaunchTemplate"]
"""The EC2 calls with which Karpenter creates (and tags) instances, fleets and launch templates."""


def _karpenter_policy(cluster: ClusterFacts) -> dict[str, Any]:
    """Karpenter's controller policy, as its getting-started CloudFormation template grants it:
    aws/karpenter-provider-aws website/content/en/docs/getting-started/getting-started-with-karpenter/
    cloudformation.yaml @1d927085 (v1.14.1, the chart's commit). Its five managed policies become one
    document; the instance profile and zonal shift statements are kept, as Karpenter 1.14 calls them."""
    ec2 = f"arn:aws:ec2:{cluster.region}"
    profiles = f"arn:aws:iam::{cluster.account}:instance-profile/*"
    cluster_tag = f"kubernetes.io/cluster/{cluster.name}"
    created = [
        f"{ec2}:*:{kind}/*"
        for kind in (
            "fleet",
            "instance",
            "volume",
            "network-interface",
            "launch-template",
            "spot-instances-request",
        )
    ]
    owned = {"StringEquals": {f"aws:ResourceTag/{cluster_tag}": "owned"}}
    request_owned = {
        f"aws:RequestTag/{cluster_tag}": "owned",
        "aws:RequestTag/eks:eks-cluster-name": cluster.name,
    }
    profile_owned = {
        "StringEquals": {
            f"aws:ResourceTag/{cluster_tag}": "owned",
            "aws:ResourceTag/topology.kubernetes.io/region": cluster.region,
        },
        "StringLike": {"aws:ResourceTag/karpenter.k8s.aws/ec2nodeclass": "*"},
    }
    profile_request = {
        **request_owned,
        "aws:RequestTag/topology.kubernetes.io/region": cluster.region,
    }
    return {
        "Version": "2012-10-17",
        "Statement": [
            _statement(
                "LaunchFromSharedResources",
                ["ec2:RunInstances", "ec2:CreateFleet"],
                [
                    f"{ec2}::image/*",
                    f"{ec2}::snapshot/*",
                    *(
                        f"{ec2}:*:{kind}/*"
                        for kind in ("security-group", "subnet", "capacity-reservation", "placement-group")
                    ),
                ],
            ),
            _statement(
                "LaunchFromOwnedLaunchTemplates",
                ["ec2:RunInstances", "ec2:CreateFleet"],
                [f"{ec2}:*:launch-template/*"],
                {**owned, "StringLike": {"aws:ResourceTag/karpenter.sh/nodepool": "*"}},
            ),
            _statement(
                "Launch",
                ["ec2:RunInstances", "ec2:CreateFleet", "ec2:CreateLaunchTemplate"],
                created,
                {
                    "StringEquals": request_owned,
                    "StringLike": {"aws:RequestTag/karpenter.sh/nodepool": "*"},
                },
            ),
            _statement(
                "TagOnLaunch",
                ["ec2:CreateTags"],
                created,
                {
                    "StringEquals": {**request_owned, "ec2:CreateAction": KARPENTER_CREATE_ACTIONS},
                    "StringLike": {"aws:RequestTag/karpenter.sh/nodepool": "*"},
                },
            ),
            _statement(
                "TagOwnedInstances",
                ["ec2:CreateTags"],
                [f"{ec2}:*:instance/*"],
                {
                    **owned,
                    "StringLike": {"aws:ResourceTag/karpenter.sh/nodepool": "*"},
                    "StringEqualsIfExists": {"aws:RequestTag/eks:eks-cluster-name": cluster.name},
                    # Only the tags Karpenter adds after launch: never the ones the other statements test.
                    "ForAllValues:StringEquals": {
                        "aws:TagKeys": ["eks:eks-cluster-name", "karpenter.sh/nodeclaim", "Name"]
                    },
                },
            ),
            _statement(
                "TerminateOwned",
                ["ec2:TerminateInstances", "ec2:DeleteLaunchTemplate"],
                [f"{ec2}:*:instance/*", f"{ec2}:*:launch-template/*"],
                {**owned, "StringLike": {"aws:ResourceTag/karpenter.sh/nodepool": "*"}},
            ),
            _statement(
                "PassNodeRole",
                ["iam:PassRole"],
                [f"arn:aws:iam::{cluster.account}:role/{cluster.node_role_name}"],
                {"StringEquals": {"iam:PassedToService": ["ec2.amazonaws.com"]}},
            ),
            _statement(
                "CreateInstanceProfiles",
                ["iam:CreateInstanceProfile"],
                [profiles],
                {
                    "StringEquals": profile_request,
                    "StringLike": {"aws:RequestTag/karpenter.k8s.aws/ec2nodeclass": "*"},
                },
            ),
            _statement(
                "TagOwnedInstanceProfiles",
                ["iam:TagInstanceProfile"],
                [profiles],
                {
                    "StringEquals": {**profile_owned["StringEquals"], **profile_request},
                    "StringLike": {
                        "aws:ResourceTag/karpenter.k8s.aws/ec2nodeclass": "*",
                        "aws:RequestTag/karpenter.k8s.aws/ec2nodeclass": "*",
                    },
                },
            ),
            _statement(
                "ManageOwnedInstanceProfiles",
                [
                    "iam:AddRoleToInstanceProfile",
                    "iam:RemoveRoleFromInstanceProfile",
                    "iam:DeleteInstanceProfile",
                ],
                [profiles],
                profile_owned,
            ),
            _statement("ReadInstanceProfiles", ["iam:GetInstanceProfile"], [profiles]),
            # ListInstanceProfiles (instance profile garbage collection) takes no resource but "*".
            _statement("ListInstanceProfiles", ["iam:ListInstanceProfiles"], ["*"]),
            _statement(
                "Cluster",
                ["eks:DescribeCluster"],
                [f"arn:aws:eks:{cluster.region}:{cluster.account}:cluster/{cluster.name}"],
            ),
            _statement(
                "Interruptions",
                ["sqs:DeleteMessage", "sqs:GetQueueUrl", "sqs:ReceiveMessage"],
                [f"arn:aws:sqs:{cluster.region}:{cluster.account}:{cluster.interruption_queue}"],
            ),
            _statement(
                "ZonalShiftStatus",
                ["arc-zonal-shift:GetManagedResource"],
                ["*"],
                {
                    "StringEquals": {
                        "arc-zonal-shift:ResourceIdentifier": f"arn:aws:eks:{cluster.region}:"
                        f"{cluster.account}:cluster/{cluster.name}"
                    }
                },
            ),
            _statement(
                "Read",
                [
                    "ec2:DescribeCapacityReservations",
                    "ec2:DescribeImages",
                    "ec2:DescribeInstances",
                    "ec2:DescribeInstanceStatus",
                    "ec2:DescribeInstanceTypeOfferings",
                    "ec2:DescribeInstanceTypes",
                    "ec2:DescribeLaunchTemplates",
                    "ec2:DescribePlacementGroups",
                    "ec2:DescribeSecurityGroups",
                    "ec2:DescribeSpotPriceHistory",
                    "ec2:DescribeSubnets",
                ],
                ["*"],
                {"StringEquals": {"aws:RequestedRegion": cluster.region}},
            ),
            _statement(
                "AmiParameters",
                ["ssm:GetParameter"],
                [f"arn:aws:ssm:{cluster.region}::parameter/aws/service/*"],
            ),
            _statement("Pricing", ["pricing:GetProducts"], ["*"]),
        ],
    }


LOAD_BALANCER_CREATE_ACTIONS = ["CreateLoadBalancer", "CreateTargetGroup", "CreateListener", "CreateRule"]
"""The ELB calls with which the controller creates (and tags) its load balancers, target groups, listeners and
rules; listeners and rules carry the cluster tag too (its ListenerRulesTagging feature gate, on by default)."""


def _load_balancer_controller_policy(cluster: ClusterFacts) -> dict[str, Any]:
    """The AWS Load Balancer Controller's policy, kubernetes-sigs/aws-load-balancer-controller
    docs/install/iam_policy.json @225f4456 (v3.5.0, the chart's app version), scoped to this region, account
    and VPC; WAF, Shield and Cognito integrations are left out (sgldeploy sets none of their annotations)."""
    elb = f"arn:aws:elasticloadbalancing:{cluster.region}:{cluster.account}"
    groups = f"arn:aws:ec2:{cluster.region}:{cluster.account}:security-group/*"
    cluster_tag = "elbv2.k8s.aws/cluster"
    tagged = {"Null": {f"aws:ResourceTag/{cluster_tag}": "false"}}
    tag_requested = {"Null": {f"aws:RequestTag/{cluster_tag}": "false"}}
    # Other tags of its own resources may change, the cluster tag never: it is what the scope tests.
    retag_owned = {
        "Null": {f"aws:RequestTag/{cluster_tag}": "true", f"aws:ResourceTag/{cluster_tag}": "false"}
    }
    return {
        "Version": "2012-10-17",
        "Statement": [
            _statement(
                "ServiceLinkedRole",
                ["iam:CreateServiceLinkedRole"],
                ["*"],
                {"StringEquals": {"iam:AWSServiceName": "elasticloadbalancing.amazonaws.com"}},
            ),
            _statement(
                "Read",
                [
                    "ec2:DescribeAccountAttributes",
                    "ec2:DescribeAddresses",
                    "ec2:DescribeAvailabilityZones",
                    "ec2:DescribeInternetGateways",
                    "ec2:DescribeVpcs",
                    "ec2:DescribeVpcPeeringConnections",
                    "ec2:DescribeSubnets",
                    "ec2:DescribeSecurityGroups",
                    "ec2:DescribeInstances",
                    "ec2:DescribeNetworkInterfaces",
                    "ec2:DescribeTags",
                    "ec2:GetSecurityGroupsForVpc",
                    "ec2:DescribeIpamPools",
                    "ec2:DescribeRouteTables",
                    "elasticloadbalancing:Describe*",
                    "acm:ListCertificates",
                    "acm:DescribeCertificate",
                    "iam:ListServerCertificates",
                    "iam:GetServerCertificate",
                ],
                ["*"],
            ),
            _statement(
                "CreateSecurityGroups",
                ["ec2:CreateSecurityGroup"],
                [groups, f"arn:aws:ec2:{cluster.region}:{cluster.account}:vpc/{cluster.vpc_id}"],
            ),
            _statement(
                "TagSecurityGroupsOnCreate",
                ["ec2:CreateTags"],
                [groups],
                {"StringEquals": {"ec2:CreateAction": "CreateSecurityGroup"}, **tag_requested},
            ),
            _statement(
                "RetagOwnedSecurityGroups", ["ec2:CreateTags", "ec2:DeleteTags"], [groups], retag_owned
            ),
            _statement(
                "OwnSecurityGroups",
                [
                    "ec2:AuthorizeSecurityGroupIngress",
                    "ec2:RevokeSecurityGroupIngress",
                    "ec2:DeleteSecurityGroup",
                ],
                [groups],
                tagged,
            ),
            _statement(
                "Create",
                [f"elasticloadbalancing:{action}" for action in LOAD_BALANCER_CREATE_ACTIONS],
                [f"{elb}:*"],
                tag_requested,
            ),
            _statement(
                "TagOnCreate",
                ["elasticloadbalancing:AddTags"],
                [f"{elb}:*"],
                {
                    "StringEquals": {"elasticloadbalancing:CreateAction": LOAD_BALANCER_CREATE_ACTIONS},
                    **tag_requested,
                },
            ),
            _statement(
                "RetagOwned",
                ["elasticloadbalancing:AddTags", "elasticloadbalancing:RemoveTags"],
                [f"{elb}:*"],
                retag_owned,
            ),
            _statement(
                "Manage",
                [
                    "elasticloadbalancing:ModifyLoadBalancerAttributes",
                    "elasticloadbalancing:SetIpAddressType",
                    "elasticloadbalancing:SetSecurityGroups",
                    "elasticloadbalancing:SetSubnets",
                    "elasticloadbalancing:DeleteLoadBalancer",
                    "elasticloadbalancing:ModifyTargetGroup",
                    "elasticloadbalancing:ModifyTargetGroupAttributes",
                    "elasticloadbalancing:DeleteTargetGroup",
                    "elasticloadbalancing:RegisterTargets",
                    "elasticloadbalancing:DeregisterTargets",
                    "elasticloadbalancing:ModifyListener",
                    "elasticloadbalancing:ModifyListenerAttributes",
                    "elasticloadbalancing:DeleteListener",
                    "elasticloadbalancing:ModifyRule",
                    "elasticloadbalancing:SetRulePriorities",
                    "elasticloadbalancing:DeleteRule",
                    "elasticloadbalancing:AddListenerCertificates",
                    "elasticloadbalancing:RemoveListenerCertificates",
                ],
                [f"{elb}:*"],
                tagged,
            ),
        ],
    }


def _external_secrets_policy(cluster: ClusterFacts) -> dict[str, Any]:
    """Read-only access to the secrets under sgldeploy/, which the SecretStore reads HF tokens from."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            _statement(
                "ReadSgldeploySecrets",
                ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"],
                [f"arn:aws:secretsmanager:{cluster.region}:{cluster.account}:secret:sgldeploy/*"],
            )
        ],
    }


POLICIES = {
    "karpenter": _karpenter_policy,
    "aws_load_balancer_controller": _load_balancer_controller_policy,
    "external_secrets": _external_secrets_policy,
}
"""The add-ons that call AWS, by spec name, and their service account's policy."""


def policy(chart: Chart, cluster: ClusterFacts) -> dict[str, Any] | None:
    """The IAM policy of the add-on's service account, or None when it calls no AWS API."""
    build = POLICIES.get(chart.addon)
    return build(cluster) if build else None


def interruption_queue_policy(queue_arn: str) -> dict[str, Any]:
    """Who may send to Karpenter's interruption queue (EventBridge, SQS), and nobody without TLS: the queue
    policy of Karpenter's CloudFormation template (cloudformation.yaml @1d927085, KarpenterInterruptionQueuePolicy)."""
    return {
        "Version": "2012-10-17",
        "Id": "EC2InterruptionPolicy",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": ["events.amazonaws.com", "sqs.amazonaws.com"]},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
            },
            {
                "Sid": "DenyHTTP",
                "Effect": "Deny",
                "Action": "sqs:*",
                "Resource": queue_arn,
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                "Principal": "*",
            },
        ],
    }


@dataclass(frozen=True)
class AddonSelection:
    """Which add-ons a stack installs, which it only references, and in what order."""

    install: list[Chart] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)


def select(addons: AddonsSpec) -> AddonSelection:
    """From the spec's AddonsSpec: true → install, "existing" → reference."""
    out = AddonSelection()
    for chart in CHARTS:
        setting = getattr(addons, chart.addon)
        if setting is True:
            out.install.append(chart)
        elif setting == "existing":
            out.existing.append(chart.addon)
    return out
