"""Rendering through the real Helm engine, checked against real Kubernetes schemas."""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from kubetune import render, spec, sweep
from kubetune.errors import ConfigError, RenderError, SpecError
from kubetune.kube.names import STORE_ENDPOINT_ENV as ENDPOINT_ENV

from conftest import ROOT, base_spec, run_cli, yaml_docs

KUBE_VERSION = "1.33.0"


def runs_of(data: dict[str, Any]) -> list[sweep.ResolvedRun]:
    return sweep.expand(spec.validate(data))


def documents(data: dict[str, Any], namespace: str | None = "ml") -> list[dict[str, Any]]:
    text = _stream(json.dumps(data, sort_keys=True), namespace)
    return yaml_docs(text)


@functools.cache
def _stream(data: str, namespace: str | None) -> str:
    """Rendering is pure, so each spec is rendered once here; every caller parses its own
    copy of the documents."""
    return render.stream(render.render(runs_of(json.loads(data)), namespace))


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


SCENARIOS: dict[str, dict[str, Any]] = {
    "single-gpu": base_spec(),
    "multi-node": base_spec(resources={"nodes": 2, "gpus": 8, "memory": "512Gi"}),
    "kueue": base_spec(resources={"queue": "team-nlp", "priority_class": "batch-low"}),
    "lora": base_spec(lora={"r": 16, "target_modules": ["query", "value"]}),
    "cpu-only": base_spec(resources={"gpus": 0, "memory": "8Gi", "shm_size": "1Gi"}),
    "sweep-50": base_spec(
        sweep={
            "parameters": {
                "train.learning_rate": {"values": [1e-5, 2e-5, 3e-5, 5e-5, 1e-4]},
                "train.seed": {"values": list(range(10))},
            }
        }
    ),
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_manifests_validate_against_kubernetes_schemas_strict(scenario: str) -> None:
    docs = documents(SCENARIOS[scenario])
    expected_runs = 50 if scenario == "sweep-50" else 1
    assert len(by_kind(docs, "Job")) == expected_runs
    for doc in docs:
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


def test_strict_validation_catches_a_bad_field() -> None:
    job = by_kind(documents(base_spec()), "Job")[0]
    job["spec"]["template"]["spec"]["restartPolicy"] = "Sometimes"
    job["spec"]["bogus"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, KUBE_VERSION, strict=True)


def test_single_gpu_job_shape() -> None:
    docs = documents(base_spec())
    assert sorted(d["kind"] for d in docs) == ["ConfigMap", "Job", "NetworkPolicy"]
    job = by_kind(docs, "Job")[0]
    run_id = job["metadata"]["name"]
    assert job["metadata"]["namespace"] == "ml"
    labels = job["metadata"]["labels"]
    assert labels["kubetune.io/run-id"] == run_id
    assert labels["kubetune.io/sweep"] == "bbc-topic"
    assert labels["app.kubernetes.io/instance"] == run_id
    js = job["spec"]
    assert js["completions"] == js["parallelism"] == 1
    assert "completionMode" not in js and "suspend" not in js
    assert js["podReplacementPolicy"] == "Failed"
    assert js["backoffLimit"] == 3 and js["activeDeadlineSeconds"] > 0
    assert js["ttlSecondsAfterFinished"] > 0
    rules = js["podFailurePolicy"]["rules"]
    assert rules[0] == {
        "action": "Ignore",
        "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
    }
    # A trainer that checkpointed on SIGTERM exits 130: retried, not counted.
    assert rules[1] == {
        "action": "Ignore",
        "onExitCodes": {"containerName": "trainer", "operator": "In", "values": [130]},
    }
    assert rules[2]["action"] == "FailJob"
    assert rules[2]["onExitCodes"] == {"containerName": "trainer", "operator": "In", "values": [2]}

    pod = js["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["terminationGracePeriodSeconds"] == 120
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["KUBETUNE_STOP_GRACE_SECONDS"] == "110"
    assert env["KUBETUNE_POD_TEMPLATE"].startswith("kubetune-job/")
    assert "KUBETUNE_CHART" not in env  # the chart version stays off the pod template
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] >= 10000
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["resources"]["requests"]["cpu"] == container["resources"]["limits"]["cpu"]
    assert container["command"][:5] == ["python", "-m", "kubetune.launch", "accelerate", "launch"]
    assert container["command"][-3:] == ["-m", "kubetune.train", "/etc/kubetune/spec.yaml"]

    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
    assert volumes["spec"]["configMap"]["name"] == run_id
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/etc/kubetune"]["readOnly"] is True
    # The read-only root filesystem leaves exactly these writable.
    assert {"/scratch", "/tmp", "/dev/shm"} <= set(mounts)
    threads = next(e["value"] for e in container["env"] if e["name"] == "OMP_NUM_THREADS")
    assert threads == container["resources"]["limits"]["cpu"] == "4"  # 4 CPUs, 1 process
    # /scratch (50Gi) + /tmp (1Gi) + 1Gi of logs, requested so the node has the disk.
    sizes = {v["name"]: v["emptyDir"].get("sizeLimit") for v in pod["volumes"] if "emptyDir" in v}
    assert (sizes["scratch"], sizes["tmp"]) == ("50Gi", "1Gi")
    assert container["resources"]["requests"]["ephemeral-storage"] == "52Gi"
    assert container["resources"]["limits"]["ephemeral-storage"] == "52Gi"
    # Consolidation by cluster-autoscaler or Karpenter must not evict a training pod.
    annotations = js["template"]["metadata"]["annotations"]
    assert annotations["cluster-autoscaler.kubernetes.io/safe-to-evict"] == "false"
    assert annotations["karpenter.sh/do-not-disrupt"] == "true"
    for name in ("HOME", "HF_HOME", "WANDB_DIR", "TMPDIR"):
        value = next(e["value"] for e in container["env"] if e["name"] == name)
        assert value.startswith(("/scratch", "/tmp"))


def test_secrets_are_referenced_by_name_never_inlined() -> None:
    docs = documents(base_spec())
    job = by_kind(docs, "Job")[0]
    env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    for name, secret in [
        ("AWS_ACCESS_KEY_ID", "kubetune-s3"),
        ("AWS_SECRET_ACCESS_KEY", "kubetune-s3"),
        ("WANDB_API_KEY", "wandb-key"),
    ]:
        assert "value" not in env[name]
        assert env[name]["valueFrom"]["secretKeyRef"]["name"] == secret
    assert not by_kind(docs, "Secret")


def test_configmap_holds_the_resolved_spec() -> None:
    data = base_spec(train={"learning_rate": 3e-5})
    (run,) = runs_of(data)
    docs = documents(data)
    configmap = by_kind(docs, "ConfigMap")[0]
    assert configmap["immutable"] is True
    assert spec.loads(configmap["data"]["spec.yaml"]) == run.spec
    job = by_kind(docs, "Job")[0]
    assert job["metadata"]["annotations"]["kubetune.io/spec-hash"] == run.spec_hash


def flag(command: list[str], name: str) -> str:
    """The value after ``name`` in an accelerate command line (once, exactly)."""
    assert command.count(name) == 1, name
    return command[command.index(name) + 1]


def test_multi_node_is_an_indexed_job_with_a_headless_service() -> None:
    docs = documents(SCENARIOS["multi-node"])  # 2 nodes × 8 GPUs
    for doc in docs:
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
    job = by_kind(docs, "Job")[0]
    name = job["metadata"]["name"]
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 2
    pod = job["spec"]["template"]["spec"]
    # An Indexed Job names each pod's host <job>-<index>; a pod hostname would override it.
    assert "hostname" not in pod and "setHostnameAsFQDN" not in pod
    (service,) = by_kind(docs, "Service")
    # <job>-0.<subdomain> resolves only through a headless Service named like the subdomain
    # that selects the pods, and before they are Ready (there is no readiness probe).
    assert pod["subdomain"] == service["metadata"]["name"] == name
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    pod_labels = job["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()

    (container,) = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 8
    env = {e["name"]: e for e in container["env"]}
    rank = env["KUBETUNE_MACHINE_RANK"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert rank == "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    main_host = env["KUBETUNE_MAIN_HOST"]["value"]
    assert main_host == f"{name}-0.{service['metadata']['name']}"

    cmd = container["command"]
    assert flag(cmd, "--num_machines") == "2"
    assert flag(cmd, "--num_processes") == "16"  # every GPU of both nodes
    assert "--multi_gpu" in cmd and "--cpu" not in cmd
    assert flag(cmd, "--machine_rank") == "$(KUBETUNE_MACHINE_RANK)"
    assert flag(cmd, "--main_process_ip") == "$(KUBETUNE_MAIN_HOST)"
    # A c10d rendezvous on index 0 (accelerate passes it as the endpoint without
    # --same_network); agents restart the whole gang in place, up to backoffLimit times.
    assert flag(cmd, "--rdzv_backend") == "c10d"
    assert "--same_network" not in cmd
    assert flag(cmd, "--max_restarts") == str(job["spec"]["backoffLimit"])
    # The run is done when index 0 is: its ranks leave only once the run is stored.
    assert job["spec"]["successPolicy"] == {"rules": [{"succeededIndexes": "0"}]}
    # Kubernetes expands $(VAR) only for variables the container defines; others stay literal.
    for var in re.findall(r"\$\((\w+)\)", " ".join(cmd)):
        assert var in env, var
    # One rendezvous port: accelerate's, the container's and the Service's.
    port = int(flag(cmd, "--main_process_port"))
    assert container["ports"] == [{"name": "rendezvous", "containerPort": port, "protocol": "TCP"}]
    (service_port,) = service["spec"]["ports"]
    assert service_port["port"] == service_port["targetPort"] == port

    # NCCL picks its own ports after the rendezvous: the run's pods reach each other on all.
    policy = by_kind(docs, "NetworkPolicy")[0]
    (rule,) = policy["spec"]["ingress"]
    assert "ports" not in rule
    assert rule["from"][0]["podSelector"]["matchLabels"].items() <= pod_labels.items()


def test_multi_node_host_names_fit_a_dns_label() -> None:
    name = "a" * spec.MAX_NAME
    data = base_spec(name=name, resources={"nodes": 64, "gpus": 8, "memory": "512Gi"})
    job = by_kind(documents(data), "Job")[0]
    # The last pod's hostname, <job>-63, must still be a DNS label.
    assert len(f"{job['metadata']['name']}-63") <= 63


def test_kueue_job_carries_the_queue_label_and_leaves_suspend_to_kueue() -> None:
    job = by_kind(documents(SCENARIOS["kueue"]), "Job")[0]
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-nlp"
    # Kueue's webhook suspends the Job at creation; a rendered suspend: true, re-applied,
    # would suspend the admitted Job again and kill its pods.
    assert "suspend" not in job["spec"]
    assert job["spec"]["template"]["spec"]["priorityClassName"] == "batch-low"


def test_scheduling_fields_reach_the_pod() -> None:
    data = base_spec(
        resources={
            "gpus": 2,
            "gpu_type": "nvidia.com/gpu.product=NVIDIA-H100-80GB-HBM3",
            "node_selector": {"pool": "gpu"},
            "tolerations": [{"key": "dedicated", "value": "ml", "effect": "NoSchedule"}],
            "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}},
        }
    )
    pod = by_kind(documents(data), "Job")[0]["spec"]["template"]["spec"]
    # The exact form: one node label, as given.
    assert pod["nodeSelector"] == {"pool": "gpu", "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"} in (
        pod["tolerations"]
    )
    assert any(t.get("key") == "nvidia.com/gpu" for t in pod["tolerations"])
    assert "nodeAffinity" in pod["affinity"]


def test_cpu_job_requests_no_gpu() -> None:
    pod = by_kind(documents(SCENARIOS["cpu-only"]), "Job")[0]["spec"]["template"]["spec"]
    assert "nvidia.com/gpu" not in pod["containers"][0]["resources"]["limits"]
    assert "tolerations" not in pod
    assert "--cpu" in pod["containers"][0]["command"]


def test_sweep_runs_get_distinct_names_and_one_sweep_label() -> None:
    docs = documents(SCENARIOS["sweep-50"])
    jobs = by_kind(docs, "Job")
    names = {j["metadata"]["name"] for j in jobs}
    assert len(names) == 50
    assert {j["metadata"]["labels"]["kubetune.io/sweep"] for j in jobs} == {"bbc-topic"}
    params = [json.loads(j["metadata"]["annotations"]["kubetune.io/params"]) for j in jobs]
    assert {p["train.learning_rate"] for p in params} == {1e-5, 2e-5, 3e-5, 5e-5, 1e-4}
    # The trainer reads the spec of its point alone: its pod carries what was swept.
    for job, point in zip(jobs, params, strict=True):
        (trainer,) = job["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e.get("value") for e in trainer["env"]}
        assert json.loads(env["KUBETUNE_PARAMS"]) == point


def test_a_run_outside_a_sweep_carries_no_params() -> None:
    (job,) = by_kind(documents(SCENARIOS["single-gpu"]), "Job")
    (trainer,) = job["spec"]["template"]["spec"]["containers"]
    assert "KUBETUNE_PARAMS" not in {e["name"] for e in trainer["env"]}


def test_output_is_byte_identical_across_processes(tmp_path: Path) -> None:
    """Two hash seeds, one stream: four multi-node runs (every kind of object) show any order
    that follows a set or a dict's hashing as well as fifty runs would."""
    path = tmp_path / "job.yaml"
    grid = {"train.learning_rate": {"values": [1e-5, 2e-5]}, "train.seed": {"values": [0, 1]}}
    data = {**SCENARIOS["multi-node"], "sweep": {"method": "grid", "parameters": grid}}
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    code = (
        "import sys; from kubetune import render, spec, sweep;"
        f"sys.stdout.write(render.stream(render.render(sweep.expand(spec.load({str(path)!r})))))"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2")
    }
    assert len(outputs) == 1
    assert "creationTimestamp" not in outputs.pop()


def test_write_dir_for_gitops(tmp_path: Path) -> None:
    out = tmp_path / "gitops"
    rendered = render.render(runs_of(SCENARIOS["sweep-50"]), gitops=True)
    render.write_dir(rendered, out)
    manifests = sorted(p.name for p in out.glob("*.yaml") if p.name != render.KUSTOMIZATION)
    assert len(manifests) == 50
    assert all((out / "values" / m.replace(".yaml", ".values.yaml")).is_file() for m in manifests)
    kustomization = yaml.safe_load((out / render.KUSTOMIZATION).read_text())
    assert kustomization["resources"] == manifests
    # The values file is exactly what produced the manifest next to it.
    first = rendered[0]
    values = yaml.safe_load((out / "values" / f"{first.run.run_id}.values.yaml").read_text())
    assert render.render_values(values) == first.documents
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    render.write_dir(rendered, out)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before

    # A smaller sweep drops the stale run files but keeps files kubetune never wrote.
    (out / "README.md").write_text("mine")
    render.write_dir(rendered[:3], out)
    left = sorted(p.name for p in out.glob("*.yaml") if p.name != render.KUSTOMIZATION)
    assert left == sorted(r.run.run_id + ".yaml" for r in rendered[:3])
    assert len(list((out / "values").iterdir())) == 3
    assert (out / "README.md").read_text() == "mine"


def test_write_dir_refuses_a_folder_it_did_not_write(tmp_path: Path) -> None:
    (tmp_path / render.KUSTOMIZATION).write_text("resources: [app.yaml]\n")
    with pytest.raises(ConfigError, match="not written by kubetune"):
        render.write_dir(render.render(runs_of(base_spec())), tmp_path)


@pytest.mark.parametrize(
    ("storage", "match"),
    [
        (None, "storage.uri: a Kubernetes Job needs an s3:// store"),
        ({"uri": "file:///tmp/runs"}, "storage.uri: file:///tmp/runs lives on one machine"),
    ],
)
def test_render_refuses_a_store_pods_cannot_reach(storage: Any, match: str) -> None:
    data = base_spec(storage=storage)
    with pytest.raises(ConfigError, match=match):
        render.render(runs_of(data))


def test_render_refuses_online_wandb_without_a_secret() -> None:
    data = base_spec(tracking={"wandb": {"mode": "online"}})
    with pytest.raises(ConfigError, match="tracking.wandb.secret"):
        render.render(runs_of(data))


def test_chart_fail_guards_reach_the_user_as_render_errors() -> None:
    values = render.render(runs_of(base_spec()))[0].values
    with pytest.raises(RenderError, match="command is required: the accelerate launch line"):
        render.render_values({**values, "command": []})
    with pytest.raises(RenderError):
        render.render_values({**values, "unknownKey": 1})


def test_chart_is_found_from_the_source_tree() -> None:
    assert render.chart_dir() == ROOT / "charts" / "kubetune-job"


def test_kind_e2e_overrides_render_a_cpu_job_against_its_minio(tmp_path: Path, s3_env: str) -> None:
    """scripts/kind-e2e.sh submits jobs/bbc-news-topic.yaml with --set overrides: they must
    make a valid CPU Job that reads and writes the script's MinIO and needs no W&B Secret."""
    from kubetune import prepare

    script = ROOT / "scripts" / "kind-e2e.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    printed = subprocess.run(
        ["bash", "-c",
         f"set -eu; ROOT={ROOT}; eval \"$(sed -n '/^CLUSTER=/,/^PYTHON=/p' {script})\"; "
         f"eval \"$(sed -n '/^SETS=(/,/^)/p' {script})\"; "
         'printf "%s\\n" "$NAMESPACE" "$SPEC" "$BUCKET" "${SETS[@]}"'],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.splitlines()  # fmt: skip
    namespace, job_spec, bucket, *sets = printed
    assert sets[::2] == ["--set"] * (len(sets) // 2)
    overrides = dict(s.split("=", 1) for s in sets[1::2])
    # The script's laptop: the prepared splits where the spec points, MinIO port-forwarded.
    laptop = tmp_path / "laptop"
    prepare.prepare("bbc-news", laptop / "data" / "bbc-news")
    import boto3

    boto3.client("s3").create_bucket(Bucket=bucket)
    out = tmp_path / "applied"
    rendered = run_cli(
        "render", str(ROOT / job_spec), "--stage", "--namespace", namespace, *sets, "--out",
        str(out), cwd=laptop, env={**os.environ, ENDPOINT_ENV: s3_env},
    )  # fmt: skip
    assert rendered.returncode == 0, rendered.stderr
    (manifest,) = [p for p in out.glob("*.yaml") if p.name != render.KUSTOMIZATION]
    docs = yaml_docs(manifest.read_text())
    for doc in docs:
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        assert doc["metadata"]["namespace"] == namespace
    pod = by_kind(docs, "Job")[0]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    assert "--cpu" in container["command"]
    assert container["image"] == overrides["image"]
    assert container["imagePullPolicy"] == "IfNotPresent"  # the image kind loaded is used
    env = {e["name"]: e for e in container["env"]}
    # MinIO's Service is `minio` in its own namespace, on port 9000: the pods' address, while
    # staging went through this machine's port-forward.
    assert env["AWS_ENDPOINT_URL"]["value"] == overrides["storage.endpoint"]
    assert env[ENDPOINT_ENV]["value"] == overrides["storage.endpoint"]
    assert env["KUBETUNE_STORE"]["value"] == overrides["storage.uri"]
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["name"] == "kubetune-s3"
    assert "WANDB_API_KEY" not in env  # the cluster has no W&B Secret
    resolved = spec.loads(by_kind(docs, "ConfigMap")[0]["data"]["spec.yaml"])
    assert resolved.resources.gpus == 0 and resolved.tracking.wandb.mode == "disabled"
    # Data and model were staged into the run's store, content-addressed: no laptop path.
    staged = f"{overrides['storage.uri']}/inputs/sha256/"
    for split in ("train", "eval", "test"):
        assert getattr(resolved.data, split).startswith(staged), split
    assert resolved.model.name.startswith(staged)


# --- issue 11: GitOps TTL, names, GPUs, threads, identity -------------------------------------


def test_gitops_folders_leave_out_the_ttl_that_stdout_keeps(tmp_path: Path) -> None:
    runs = runs_of(base_spec())
    streamed = by_kind(documents(base_spec()), "Job")[0]
    assert streamed["spec"]["ttlSecondsAfterFinished"] == 7 * 24 * 3600
    # Argo CD self-heal and Flux IfNotPresent re-create a Job the TTL deleted, which trains
    # again: a folder's Jobs stay until they leave the folder. Whatever rendered them.
    for rendered in (render.render(runs, "ml"), render.render(runs, "ml", gitops=True)):
        out = tmp_path / f"out{len(list(tmp_path.iterdir()))}"
        render.write_dir(rendered, out)
        (manifest,) = [p for p in out.glob("*.yaml") if p.name != render.KUSTOMIZATION]
        job = next(d for d in yaml.safe_load_all(manifest.read_text()) if d["kind"] == "Job")
        assert "ttlSecondsAfterFinished" not in job["spec"]
        kubernetes_validate.validate(job, KUBE_VERSION, strict=True)
        values = yaml.safe_load((out / "values" / f"{runs[0].run_id}.values.yaml").read_text())
        assert values["job"]["ttlSecondsAfterFinished"] is None
        assert render.stream([render.Rendered(runs[0], values, render.render_values(values))]) == (
            manifest.read_text()
        )


DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS_1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@pytest.mark.parametrize("name", ["7b-summarizer", "bbc-topic", "0" * spec.MAX_NAME])
def test_multi_node_service_is_a_dns_1035_name_for_any_spec_name(name: str) -> None:
    data = base_spec(name=name, resources={"nodes": 64, "gpus": 8, "memory": "512Gi"})
    docs = documents(data)
    for doc in docs:
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
    (service,) = by_kind(docs, "Service")
    job = by_kind(docs, "Job")[0]
    service_name, job_name = service["metadata"]["name"], job["metadata"]["name"]
    # Service names are DNS-1035 labels (the API server rejects a leading digit with 422);
    # the pod's subdomain and hostnames (<job>-<index>) are DNS-1123 labels.
    assert DNS_1035.match(service_name) and len(service_name) <= 63, service_name
    pod = job["spec"]["template"]["spec"]
    assert pod["subdomain"] == service_name
    assert DNS_1123.match(f"{job_name}-63") and len(f"{job_name}-63") <= 63
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["KUBETUNE_MAIN_HOST"] == f"{job_name}-0.{service_name}"
    if name[0].isalpha():
        assert service_name == job_name  # unchanged for the names that always worked


def required_terms(pod: dict[str, Any]) -> list[dict[str, Any]]:
    node_affinity = pod["affinity"]["nodeAffinity"]
    terms: list[dict[str, Any]] = node_affinity["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    return terms


def matches(labels: dict[str, str], term: dict[str, Any]) -> bool:
    """Whether a node with ``labels`` satisfies one nodeSelectorTerm (operator In only)."""
    return all(labels.get(e["key"]) in e["values"] for e in term["matchExpressions"])


#: A node of each kind, as its labeller labels it.
NODES = {
    "gpu-operator": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"},
    "gke": {"cloud.google.com/gke-accelerator": "nvidia-a100-80gb"},
    "karpenter": {
        "karpenter.k8s.aws/instance-gpu-name": "a100",
        "karpenter.k8s.aws/instance-gpu-memory": "81920",
    },
    "eks-auto-mode": {
        "eks.amazonaws.com/instance-gpu-name": "a100",
        "eks.amazonaws.com/instance-gpu-memory": "81920",
    },
}


def test_gpu_model_selects_its_nodes_on_every_kind_of_cluster() -> None:
    data = base_spec(resources={"gpus": 8, "gpu_type": "a100-80gb", "memory": "512Gi"})
    job = by_kind(documents(data), "Job")[0]
    kubernetes_validate.validate(job, KUBE_VERSION, strict=True)
    pod = job["spec"]["template"]["spec"]
    assert "nodeSelector" not in pod  # a nodeSelector would AND the labels; terms are ORed
    terms = required_terms(pod)
    for kind, labels in NODES.items():
        assert any(matches(labels, t) for t in terms), kind
    # The 40GB A100 shares Karpenter's gpu name; its memory tells them apart.
    smaller = {"karpenter.k8s.aws/instance-gpu-name": "a100",
               "karpenter.k8s.aws/instance-gpu-memory": "40960"}  # fmt: skip
    assert not any(matches(smaller, t) for t in terms)
    assert not any(matches({"nvidia.com/gpu.product": "NVIDIA-L4"}, t) for t in terms)


def test_gpu_model_terms_are_combined_with_the_specs_own_required_terms() -> None:
    own = {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["training"]}]}
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [own]}}}  # fmt: skip
    data = base_spec(resources={"gpu_type": "l4", "affinity": affinity})
    pod = by_kind(documents(data), "Job")[0]["spec"]["template"]["spec"]
    terms = required_terms(pod)
    assert any(matches({"pool": "training", "cloud.google.com/gke-accelerator": "nvidia-l4"}, t)
               for t in terms)  # fmt: skip
    assert not any(matches({"cloud.google.com/gke-accelerator": "nvidia-l4"}, t) for t in terms)
    assert not any(matches({"pool": "training"}, t) for t in terms)


def test_an_unknown_gpu_model_is_one_line_naming_the_known_ones() -> None:
    with pytest.raises(SpecError) as info:
        spec.validate(base_spec(resources={"gpu_type": "a101"}))
    (issue,) = info.value.issues
    assert issue.path == "resources.gpu_type"
    assert "a100-80gb" in issue.message and "label=value" in issue.message
    assert "\n" not in issue.message


@pytest.mark.parametrize(
    ("cpu", "gpus", "threads"),
    [("32", 4, 8), ("4", 1, 4), ("3", 4, 1), ("500m", 0, 1), ("8", 0, 8)],
)
def test_omp_threads_are_per_training_process(cpu: str, gpus: int, threads: int) -> None:
    memory = {"memory": "64Gi"} if gpus else {"memory": "8Gi", "shm_size": "1Gi"}
    data = base_spec(resources={"cpu": cpu, "gpus": gpus, **memory})
    container = by_kind(documents(data), "Job")[0]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["OMP_NUM_THREADS"] == str(threads)
    processes = int(flag(container["command"], "--num_processes"))
    assert processes == max(gpus, 1)


def test_service_account_and_image_pull_secrets_reach_the_pod() -> None:
    data = base_spec(
        resources={"service_account": "trainer-irsa", "image_pull_secrets": ["ghcr-pull"]},
        storage={"uri": "s3://runs/kubetune"},  # credentials from the pod's identity
    )
    job = by_kind(documents(data), "Job")[0]
    kubernetes_validate.validate(job, KUBE_VERSION, strict=True)
    pod = job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "trainer-irsa"
    assert pod["imagePullSecrets"] == [{"name": "ghcr-pull"}]
    # IRSA's webhook mounts its own projected token; the API token stays out.
    assert pod["automountServiceAccountToken"] is False
    env = {e["name"] for e in pod["containers"][0]["env"]}
    assert "AWS_ACCESS_KEY_ID" not in env


@pytest.mark.parametrize(
    ("field", "value"),
    [("service_account", "Trainer_SA"), ("image_pull_secrets", ["AKIAABCDEFGHIJKLMNOP"])],
)
def test_identity_names_are_checked(field: str, value: Any) -> None:
    with pytest.raises(SpecError, match=f"resources.{field}"):
        spec.validate(base_spec(resources={field: value}))


def test_a_cpu_gang_renders_two_pods_whose_workers_use_torchrun() -> None:
    data = base_spec(resources={"nodes": 2, "gpus": 0, "memory": "8Gi", "shm_size": "1Gi"})
    docs = documents(data)
    for doc in docs:
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
    (job,) = by_kind(docs, "Job")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    cmd = container["command"]
    assert "--multi_gpu" in cmd and "--cpu" not in cmd  # accelerate's --cpu starts one process
    assert flag(cmd, "--num_processes") == "2"
    assert "nvidia.com/gpu" not in container["resources"]["limits"]


def test_gang_jobset_renders_a_jobset_that_restarts_every_pod() -> None:
    data = base_spec(
        resources={"nodes": 2, "gpus": 8, "memory": "512Gi", "gang": "jobset", "queue": "q",
                   "backoff_limit": 4}
    )  # fmt: skip
    docs = documents(data)
    kinds = sorted(d["kind"] for d in docs)
    # No Service or Job of ours: the JobSet makes its headless Service and child Job.
    assert kinds == ["ConfigMap", "JobSet", "NetworkPolicy"]
    (jobset,) = by_kind(docs, "JobSet")
    name = jobset["metadata"]["name"]
    assert jobset["apiVersion"] == "jobset.x-k8s.io/v1alpha2"
    # The JobSet API's fields (v1alpha2 JobSetSpec), nothing else.
    assert set(jobset["spec"]) == {"ttlSecondsAfterFinished", "network", "failurePolicy",
                                   "replicatedJobs"}  # fmt: skip
    assert jobset["spec"]["network"] == {
        "enableDNSHostnames": True, "subdomain": name, "publishNotReadyAddresses": True
    }  # fmt: skip
    policy = jobset["spec"]["failurePolicy"]
    assert policy["maxRestarts"] == 4
    assert policy["rules"] == [
        {"name": "ConfigError", "action": "FailJobSet", "onJobFailureReasons": ["PodFailurePolicy"]}
    ]
    # Kueue admits the JobSet as one workload.
    assert jobset["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "q"
    (replicated,) = jobset["spec"]["replicatedJobs"]
    assert set(replicated) == {"name", "replicas", "template"} and replicated["replicas"] == 1
    template = replicated["template"]
    assert "kueue.x-k8s.io/queue-name" not in template["metadata"]["labels"]
    # The child Job is the default gang's Job: strict batch/v1 validation of it as a Job.
    child = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name}, **template}
    kubernetes_validate.validate(child, KUBE_VERSION, strict=True)
    spec_ = template["spec"]
    assert spec_["backoffLimit"] == 0, "a counted pod failure fails the child Job: all restart"
    assert "ttlSecondsAfterFinished" not in spec_ and "suspend" not in spec_
    assert spec_["completionMode"] == "Indexed" and spec_["completions"] == 2
    ignored = [r for r in spec_["podFailurePolicy"]["rules"] if r["action"] == "Ignore"]
    assert any(r.get("onExitCodes", {}).get("values") == [130] for r in ignored)
    (container,) = spec_["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["KUBETUNE_MAIN_HOST"] == f"{name}-trainer-0-0.{name}"
    assert flag(container["command"], "--rdzv_backend") == "c10d"


def test_gang_must_be_job_or_jobset() -> None:
    with pytest.raises(Exception, match="resources.gang"):
        spec.validate(base_spec(resources={"nodes": 2, "gang": "mpi"}))


def test_out_onto_a_file_names_the_option(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("mine\n", encoding="utf-8")
    rendered = render.render(runs_of(base_spec()), "ml")
    for out in (tmp_path / "taken", tmp_path / "taken" / "below"):
        with pytest.raises(ConfigError, match=r"^--out: .* is a file, or inside one"):
            render.write_dir(rendered, out)
    assert (tmp_path / "taken").read_text(encoding="utf-8") == "mine\n"
