"""The in-cluster verification (`verify.job`): the rendered Job and its ConfigMap, valid Kubernetes objects that
run after the update they measure; and the rendered command itself, run here (the ConfigMap's file, the Job's
arguments and environment) against the loopback stand-in, where its exit code is the gate."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sgldeploy.builders import autoscaler
from sgldeploy.verify import measure

from . import k8s_schemas
from .conftest import resources_of
from .openai_stand_in import Behaviour
from .test_verify import stand_in
from .variants import RenderedVariants

JOB = "kubernetes:batch/v1:Job"
CONFIG_MAP = "kubernetes:core/v1:ConfigMap"
SERVICE = "kubernetes:core/v1:Service"


@pytest.fixture
def variants() -> RenderedVariants:
    """Each test's own renders, not the session's shared ones: `make mutate` then maps the rendering code to every
    test here that checks it, and each run renders with the mutant it tests."""
    return RenderedVariants()


def _verify(variants: RenderedVariants, variant: str) -> tuple[Any, Any, Any]:
    plan = variants[variant]
    [job] = [
        j
        for j in resources_of(plan, JOB)
        if j.inputs["metadata"]["labels"].get("app.kubernetes.io/component") == "verify"
    ]
    [tool] = [
        c
        for c in resources_of(plan, CONFIG_MAP)
        if c.inputs["metadata"]["labels"].get("app.kubernetes.io/component") == "verify"
    ]
    return plan, job, tool


def _args(job: Any) -> dict[str, Any]:
    container = job.inputs["spec"]["template"]["spec"]["containers"][0]
    return vars(measure._parser().parse_args([str(a) for a in container["args"]]))


def _service_url(plan: Any, name: str) -> str:
    [service] = [s for s in resources_of(plan, SERVICE) if s.inputs["metadata"]["name"] == name]
    meta = service.inputs["metadata"]
    return f"http://{name}.{meta['namespace']}.svc:{int(service.inputs['spec']['ports'][0]['port'])}"


def test_only_deployments_that_ask_get_a_job_and_it_is_valid(variants):
    plan, job, tool = _verify(variants, "prod")
    assert job.inputs["metadata"]["name"].startswith("llama-70b-verify-")  # llama-8b sets no verify.job
    for r in (job, tool):
        assert k8s_schemas.validate(r.inputs, "1.33")
    spec = job.inputs["spec"]
    assert spec["backoffLimit"] == 0 and spec["template"]["spec"]["restartPolicy"] == "Never"
    container = spec["template"]["spec"]["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert spec["template"]["spec"]["automountServiceAccountToken"] is False
    # The measurement is this project's file, byte for byte, mounted from the ConfigMap the Job names.
    assert tool.inputs["data"]["measure.py"] == open(measure.__file__, encoding="utf-8").read()
    [volume] = [v for v in spec["template"]["spec"]["volumes"] if "configMap" in v]
    assert volume["configMap"]["name"] == tool.inputs["metadata"]["name"]
    assert container["command"][-1] == f"{container['volumeMounts'][0]['mountPath']}/measure.py"
    assert container["image"] == next(
        d.spec.serving.image for d in plan.loaded.deployments if d.spec.name == "llama-70b"
    )


def test_the_job_measures_the_deployments_own_workload_against_its_targets(variants):
    plan, job, _ = _verify(variants, "prod")
    dep = next(d.spec for d in plan.loaded.deployments if d.spec.name == "llama-70b")
    a = _args(job)
    assert a["url"] == _service_url(plan, "llama-70b")  # no router, no canary running: its Service
    assert a["model"] == dep.served_name
    assert (a["input_tokens"], a["output_tokens"]) == (dep.workload.input_tokens, dep.workload.output_tokens)
    assert (
        a["concurrency"] == dep.serving.max_concurrency and a["requests"] == 4 * dep.serving.max_concurrency
    )
    assert (a["ttft_p95"], a["itl_p95"]) == (dep.slo.ttft_p95_seconds, dep.slo.itl_p95_seconds)
    assert a["admitted"] is None and not a["from_zero"] and a["stable_url"] is None
    figures = json.loads(a["plan"])
    loaded = next(d for d in plan.loaded.deployments if d.spec.name == "llama-70b")
    assert figures["ttft_seconds"] == loaded.sizing.throughput.estimate.ttft_seconds
    # The key as a file from the deployment's Secret, readable by the pod's group (nobody) only; never in env.
    pod = job.inputs["spec"]["template"]["spec"]
    container = pod["containers"][0]
    [mount] = [m for m in container["volumeMounts"] if a["api_key_file"].startswith(m["mountPath"] + "/")]
    [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"] == {"secretName": "llama-70b-api-key", "defaultMode": 0o440}
    assert a["api_key_file"].endswith("/API_KEY") and a["api_key_env"] is None
    assert pod["securityContext"]["runAsUser"] == pod["securityContext"]["fsGroup"] == 65534
    assert [e["name"] for e in container["env"]] == ["PYTHONUNBUFFERED"]


def test_the_job_runs_after_the_workload_and_the_secret_it_reads(variants):
    plan, job, tool = _verify(variants, "prod")
    urns = {r.urn: r for r in plan.recording.resources}
    waits = {
        (urns[u].type, urns[u].inputs.get("metadata", {}).get("name")) for u in job.dependencies if u in urns
    }
    sha = next(d.model.sha for d in plan.loaded.deployments if d.spec.name == "llama-70b")
    assert ("kubernetes:apps/v1:Deployment", f"llama-70b-{sha[:8]}") in waits  # the stable commit's rollout
    assert ("kubernetes:core/v1:Secret", "llama-70b-api-key") in waits
    assert (CONFIG_MAP, tool.inputs["metadata"]["name"]) in waits


def test_a_canary_is_measured_against_its_stable_commit(variants):
    plan, job, _ = _verify(variants, "canary")
    a = _args(job)
    assert a["url"] == _service_url(plan, "canary-canary") and a["stable_url"] == _service_url(plan, "canary")
    assert a["margin_percent"] == 15 and a["admitted"] is None


def test_a_deployment_at_zero_is_woken_through_the_interceptor_and_given_a_cold_starts_time(variants):
    plan, job, _ = _verify(variants, "verify-from-zero")
    loaded = plan.loaded.deployments[0]
    a = _args(job)
    assert a["url"] == f"http://{autoscaler.proxy_host(loaded.spec, 'llm')}:{autoscaler.INTERCEPTOR_PORT}"
    assert a["from_zero"] and (a["concurrency"], a["requests"]) == (3, 9)
    wait = autoscaler.wait_seconds(loaded.spec, loaded.sizing)  # what the interceptor holds a request for
    assert a["timeout_seconds"] >= wait
    assert job.inputs["spec"]["activeDeadlineSeconds"] > wait
    # The plan's cold start on a new node, with a third as margin: the longest a request waits, and then the load.
    from sgldeploy.offline.plan_json import plan_json

    cold = plan_json(plan)["deployments"][0]["cold_start_seconds"]["new_node"]["total"]
    assert a["timeout_seconds"] == max(600, cold * 4 / 3)
    assert job.inputs["spec"]["activeDeadlineSeconds"] == int(cold * 4 / 3) + 1800
    assert json.loads(a["plan"])["cold_start_seconds"] == cold


def test_a_disaggregated_deployment_is_measured_through_its_pd_router(variants):
    plan, job, _ = _verify(variants, "disaggregated")
    a = _args(job)
    assert a["url"] == _service_url(plan, "llama-70b-rag-router")
    decode = next(d.spec for d in plan.loaded.deployments if d.spec.name == "llama-70b-rag-decode")
    assert a["admitted"] == decode.serving.max_concurrency * decode.max_replicas


def test_a_new_commit_or_spec_is_a_new_job_and_an_unchanged_one_is_not(variants):
    from sgldeploy.builders import verify_job

    plan, job, _ = _verify(variants, "prod")
    dep = next(d.spec for d in plan.loaded.deployments if d.spec.name == "llama-70b")
    args = [str(x) for x in job.inputs["spec"]["template"]["spec"]["containers"][0]["args"]]
    sha = next(d.model.sha for d in plan.loaded.deployments if d.spec.name == "llama-70b")
    assert verify_job.job_name(dep, sha, args) == job.inputs["metadata"]["name"]
    assert verify_job.job_name(dep, "f" * 40, args) != job.inputs["metadata"]["name"]
    wider = dep.model_copy(update={"scaling": dep.scaling.model_copy(update={"max_replicas": 3})})
    assert verify_job.job_name(wider, sha, args) != job.inputs["metadata"]["name"]


@pytest.mark.parametrize(("itl", "code"), [(0.02, 0), (0.12, 1)])
def test_the_rendered_command_is_the_gate(variants, tmp_path, itl, code):
    """The ConfigMap's file run with the Job's arguments (the URL swapped for the stand-in's) and its key from the
    environment, in a bare interpreter as the serving image's `python3 -I -B` runs it: exit 0 within the
    targets, 1 past them (prod's llama-70b: ITL p95 0.08 s)."""
    _, job, tool = _verify(variants, "prod")
    script = tmp_path / "measure.py"
    script.write_text(tool.inputs["data"]["measure.py"])
    args = [str(a) for a in job.inputs["spec"]["template"]["spec"]["containers"][0]["args"]]
    with stand_in(ttft=0.05, itl=itl, model=_args(job)["model"]) as s:
        args[args.index("--url") + 1] = s.url
        for flag, value in (("--concurrency", "2"), ("--requests", "4"), ("--output-tokens", "6")):
            args[args.index(flag) + 1] = value
        key_file = tmp_path / "API_KEY"
        key_file.write_text(f"{Behaviour().key}\n")  # as a Secret's file holds it
        args[args.index("--api-key-file") + 1] = str(key_file)
        env = {"PATH": os.environ["PATH"]}
        done = subprocess.run(
            [sys.executable, "-I", "-B", str(script), *args, "--json", str(tmp_path / "r.json")],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == code, done.stdout + done.stderr
    assert ("SLO holds" in done.stdout) is (code == 0)
    result = json.loads((tmp_path / "r.json").read_text())["results"]["endpoint"]
    assert result["settings"]["input_tokens"] == 1024


def test_the_plan_says_what_the_job_measures_once_per_deployment(variants):
    from sgldeploy.offline.plan_json import plan_json

    by_name = {d["name"]: d for d in plan_json(variants["prod"])["deployments"]}
    assert by_name["llama-8b"]["verify"] is None
    assert by_name["llama-70b"]["verify"] == {
        "deployment": "llama-70b",
        "concurrency": 16,  # serving.max_concurrency
        "requests": 64,  # four per slot
        "ttft_p95_seconds": 2,
        "itl_p95_seconds": 0.08,
        "canary_margin_percent": 10,
    }
    pd = {d["name"]: d["verify"] for d in plan_json(variants["disaggregated"])["deployments"]}
    assert pd["llama-70b-rag-prefill"] is None and pd["llama-70b-rag-decode"]["deployment"] == "llama-70b-rag"
    zero = plan_json(variants["verify-from-zero"])["deployments"][0]["verify"]
    assert (zero["concurrency"], zero["requests"]) == (3, 9)


def test_the_plan_text_says_it_once(variants):
    from sgldeploy.offline.plan_text import summary

    text = summary(variants["prod"]).split("\n")
    assert [line for line in text if line.startswith("  verify ")] == [
        "  verify     after each update, a Job sends 64 requests, 16 at a time, to llama-70b, against TTFT p95 2 s "
        "and ITL p95 0.08 s; `pulumi up` fails when it misses"
    ]


def test_the_whole_job_as_rendered(variants):
    """Every field of prod's verify Job, written out here (the arguments are checked above)."""
    plan, job, tool = _verify(variants, "prod")
    spec = job.inputs["spec"]
    template = spec["template"]
    container = template["spec"]["containers"][0]
    labels = {
        "app.kubernetes.io/instance": "llama-70b",
        "app.kubernetes.io/component": "verify",
        "app.kubernetes.io/managed-by": "sgldeploy",
    }
    assert job.inputs["metadata"]["labels"] == labels == template["metadata"]["labels"]
    assert tool.inputs["metadata"]["labels"] == labels and tool.inputs["immutable"] is True
    digest = hashlib.sha256(Path(measure.__file__).read_bytes()).hexdigest()
    assert tool.inputs["metadata"]["name"] == f"llama-70b-verify-tool-{digest[:10]}"
    assert tool.inputs["metadata"]["annotations"] == {"sgldeploy.io/sha256": digest}
    assert {k: v for k, v in spec.items() if k != "template"} == {
        "backoffLimit": 0,
        "activeDeadlineSeconds": 1800,
    }
    assert {k: v for k, v in container.items() if k != "args"} == {
        "name": "verify",
        "image": "lmsysorg/sglang:v0.5.23",
        "command": ["python3", "-I", "-B", "/opt/sgldeploy-verify/measure.py"],
        "env": [{"name": "PYTHONUNBUFFERED", "value": "1"}],
        "volumeMounts": [
            {"name": "verify-tool", "mountPath": "/opt/sgldeploy-verify", "readOnly": True},
            {"name": "api-key", "mountPath": "/var/run/sgldeploy-api-key", "readOnly": True},
        ],
        "resources": {"requests": {"cpu": "1", "memory": "512Mi"}, "limits": {"memory": "1Gi"}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": True,
        },
    }
    assert template["spec"]["restartPolicy"] == "Never"
    assert template["spec"]["volumes"][0] == {
        "name": "verify-tool",
        "configMap": {
            "name": tool.inputs["metadata"]["name"],
            "items": [{"key": "measure.py", "path": "measure.py"}],
            "defaultMode": 0o444,
        },
    }
    assert template["spec"]["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 65534,
        "runAsGroup": 65534,
        "fsGroup": 65534,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def test_without_a_key_or_targets_the_job_passes_neither():
    from sgldeploy.builders import verify_job
    from sgldeploy.offline.plan_text import _verify_line
    from sgldeploy.spec.validate import parse_stack

    from .conftest import deployment

    dep = parse_stack(None, [deployment(endpoint={"auth": "none"}, verify={"job": True})]).deployments[0]
    settings = measure.Settings(100, 10, 2, 8, measure.Targets(None, None))
    v = verify_job.Verification(dep, "m", settings, measure.Plan())
    args = verify_job.argv(v, "http://qwen.llm.svc:80", None, api_key=False)
    assert not {"--api-key-file", "--api-key-env", "--ttft-p95", "--itl-p95", "--admitted"} & set(args)
    assert vars(measure._parser().parse_args(args))["plan"] == json.dumps(dataclasses.asdict(measure.Plan()))
    spec = verify_job.job_spec(dep, args, None, "qwen-verify-tool-x", 1800)
    assert [v["name"] for v in spec["template"]["spec"]["volumes"]] == ["verify-tool"]
    plan_line = {
        "deployment": "qwen",
        "requests": 8,
        "concurrency": 2,
        "ttft_p95_seconds": None,
        "itl_p95_seconds": None,
    }
    assert _verify_line(plan_line) == [
        "  verify     after each update, a Job sends 8 requests, 2 at a time, to qwen, against its contract only "
        "(no slo set); `pulumi up` fails when it misses"
    ]
