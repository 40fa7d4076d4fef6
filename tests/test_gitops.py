"""GitOps: the examples in deploy/ apply what `kubetune render --out` writes, and that output
is the same bytes on every run and every machine."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml

from kubetune import render, spec, sweep

from conftest import EXAMPLES_GROUP, ROOT, cli_sequence, run_cli, yaml_docs

pytestmark = pytest.mark.xdist_group(EXAMPLES_GROUP)

DEPLOY = ROOT / "deploy"
CHART = ROOT / "charts" / "kubetune-job"
RENDER_LINE = re.compile(r"^#\s+kubetune render (\S+) --stage -n (\S+) --out (\S+)$", re.MULTILINE)

EXPECTED_KINDS = {
    "argocd/bbc-grid-rendered.yaml": [("argoproj.io/v1alpha1", "Application")],
    "argocd/bbc-grid-run-helm.yaml": [("argoproj.io/v1alpha1", "Application")],
    "flux/bbc-grid.yaml": [
        ("source.toolkit.fluxcd.io/v1", "GitRepository"),
        ("kustomize.toolkit.fluxcd.io/v1", "Kustomization"),
    ],
    "kueue/team-nlp.yaml": [
        ("kueue.x-k8s.io/v1beta2", "ResourceFlavor"),
        ("kueue.x-k8s.io/v1beta2", "ClusterQueue"),
        ("kueue.x-k8s.io/v1beta2", "LocalQueue"),
        ("scheduling.k8s.io/v1", "PriorityClass"),
    ],
    # kubetune serve of a stored index (tests/serve/test_deploy.py runs its container).
    "serve/bbc-news-index.yaml": [("apps/v1", "Deployment"), ("v1", "Service")],
}


S3_ENV = {
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def load(name: str) -> list[dict[str, Any]]:
    return yaml_docs((DEPLOY / name).read_text(encoding="utf-8"))


def render_line(name: str) -> tuple[str, str, str]:
    """The `kubetune render SPEC -n NS --out DIR` an example's header says it applies."""
    (found,) = RENDER_LINE.findall((DEPLOY / name).read_text(encoding="utf-8"))
    name_, namespace, out = found
    return str(name_), str(namespace), str(out)


def laptop(cwd: Path) -> Path:
    """A working folder holding the (small, fake) BBC News splits the examples name."""
    (cwd / "data" / "bbc-news").mkdir(parents=True)
    for split in ("train", "validation", "test"):
        (cwd / "data" / "bbc-news" / f"{split}.jsonl").write_text(
            f'{{"text": "{split}", "label": "tech"}}\n', encoding="utf-8"
        )
    return cwd


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A working folder with the real BBC News splits, as `kubetune data prepare` writes them
    (seeded: the same bytes, hence the same staged run ids, on every machine)."""
    from kubetune import prepare

    cwd = tmp_path_factory.mktemp("laptop")
    prepare.prepare("bbc-news", cwd / "data" / "bbc-news")
    return cwd


@pytest.fixture(scope="module")
def config_repo(tmp_path_factory: pytest.TempPathFactory, s3_endpoint: str, prepared: Path) -> Path:
    """A config repo holding what the examples' header command writes (inputs staged in moto);
    written once for the module's tests, which only read it."""
    import boto3

    commands = {render_line(n) for n in EXPECTED_KINDS if n.startswith(("argocd", "flux"))}
    assert len(commands) == 1, "the GitOps examples should describe the same folder"
    ((job, namespace, out),) = commands
    repo = tmp_path_factory.mktemp("config") / "ml-gitops"
    with pytest.MonkeyPatch.context() as env:  # s3_env, for the module
        for key, value in {**S3_ENV, "AWS_ENDPOINT_URL": s3_endpoint}.items():
            env.setenv(key, value)
        boto3.client("s3").create_bucket(Bucket="kubetune-runs")
        proc = run_cli(
            "render", str(ROOT / job), "--stage", "-n", namespace, "--out", str(repo / out),
            cwd=prepared,
        )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return repo


def test_examples_parse_with_the_right_kinds() -> None:
    found = {
        str(p.relative_to(DEPLOY)): [
            (d["apiVersion"], d["kind"]) for d in load(str(p.relative_to(DEPLOY)))
        ]
        for p in sorted(DEPLOY.rglob("*.yaml"))
    }
    assert found == EXPECTED_KINDS


def test_argocd_applies_the_rendered_folder(config_repo: Path) -> None:
    _job, namespace, out = render_line("argocd/bbc-grid-rendered.yaml")
    (app,) = load("argocd/bbc-grid-rendered.yaml")
    source = app["spec"]["source"]
    assert source["path"] == out and "helm" not in source
    folder = config_repo / source["path"]
    assert (folder / render.KUSTOMIZATION).is_file()
    assert app["spec"]["destination"]["namespace"] == namespace
    sync = app["spec"]["syncPolicy"]
    assert sync["automated"]["prune"] is True
    # Self-heal must leave Kueue's admission (unsuspending the Job) alone.
    assert "RespectIgnoreDifferences=true" in sync["syncOptions"]
    (ignored,) = app["spec"]["ignoreDifferences"]
    assert (ignored["group"], ignored["kind"]) == ("batch", "Job")
    assert "/spec/suspend" in ignored["jsonPointers"]


def test_flux_applies_the_rendered_folder(config_repo: Path) -> None:
    _job, _namespace, out = render_line("flux/bbc-grid.yaml")
    repository, kustomization = load("flux/bbc-grid.yaml")
    source = kustomization["spec"]["sourceRef"]
    assert (source["kind"], source["name"]) == ("GitRepository", repository["metadata"]["name"])
    assert kustomization["metadata"]["namespace"] == repository["metadata"]["namespace"]
    assert os.path.normpath(kustomization["spec"]["path"]) == os.path.normpath(out)
    assert (config_repo / out / render.KUSTOMIZATION).is_file()
    assert kustomization["spec"]["prune"] is True
    (patch,) = kustomization["spec"]["patches"]
    assert patch["target"] == {"group": "batch", "kind": "Job"}
    (op,) = yaml.safe_load(patch["patch"])
    assert op == {
        "op": "add",
        "path": "/metadata/annotations/kustomize.toolkit.fluxcd.io~1ssa",
        "value": "IfNotPresent",
    }


def test_both_gitops_sources_point_at_the_same_repository() -> None:
    (rendered,) = load("argocd/bbc-grid-rendered.yaml")
    (helm_app,) = load("argocd/bbc-grid-run-helm.yaml")
    repository, _ = load("flux/bbc-grid.yaml")
    values_source = next(s for s in helm_app["spec"]["sources"] if s.get("ref") == "values")
    assert rendered["spec"]["source"]["repoURL"] == repository["spec"]["url"]
    assert values_source["repoURL"] == repository["spec"]["url"]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="needs kubectl (kustomize)")
def test_kustomize_builds_exactly_the_rendered_objects(config_repo: Path) -> None:
    _job, _namespace, out = render_line("flux/bbc-grid.yaml")
    folder = config_repo / out
    built = subprocess.run(
        ["kubectl", "kustomize", str(folder)], capture_output=True, text=True, timeout=120,
        check=True,
    ).stdout  # fmt: skip

    def key(doc: dict[str, Any]) -> tuple[str, str]:
        return doc["kind"], doc["metadata"]["name"]

    from_kustomize = {key(d): d for d in yaml_docs(built)}
    from_files = {
        key(d): d
        for path in folder.glob("*.yaml")
        if path.name != render.KUSTOMIZATION
        for d in yaml_docs(path.read_text(encoding="utf-8"))
    }
    assert from_kustomize == from_files
    assert len([k for k in from_files if k[0] == "Job"]) == 9  # the 3 × 3 grid, values/ not applied


def test_argocd_helm_source_renders_the_same_run(config_repo: Path) -> None:
    job, namespace, out = render_line("argocd/bbc-grid-run-helm.yaml")
    (app,) = load("argocd/bbc-grid-run-helm.yaml")
    chart_source = next(s for s in app["spec"]["sources"] if "path" in s)
    chart_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["version"]
    assert (ROOT / chart_source["path"]) == CHART
    assert chart_source["targetRevision"] == f"v{chart_version}"
    helm = chart_source["helm"]
    (value_file,) = helm["valueFiles"]
    assert value_file.startswith("$values/")
    values_path = config_repo / value_file.removeprefix("$values/")
    run_ids = sorted(p.name.split(".")[0] for p in (config_repo / out / "values").glob("*"))
    assert values_path.is_file(), (
        f"{value_file} is not written by kubetune render {job}; runs are {run_ids}"
    )
    run_id = values_path.name.removesuffix(".values.yaml")
    assert values_path.parent == config_repo / out / "values"
    assert helm["releaseName"] == app["metadata"]["name"] == run_id
    assert app["spec"]["destination"]["namespace"] == namespace

    # What Argo CD's `helm template` gives is what the folder holds for that run.
    values = yaml.safe_load(values_path.read_text(encoding="utf-8"))
    out_docs = helm_python.Chart.load(str(CHART)).render(
        values, name=helm["releaseName"], namespace=namespace
    )
    argocd_objects = sorted(
        (yaml.safe_load(text) for k, text in out_docs.items() if k.endswith(".yaml")),
        key=lambda d: (d or {}).get("kind", ""),
    )
    argocd_objects = [d for d in argocd_objects if d]
    folder_objects = sorted(
        yaml_docs((config_repo / out / f"{run_id}.yaml").read_text()),
        key=lambda d: d["kind"],
    )
    assert argocd_objects == folder_objects


def test_kueue_example_serves_the_queued_job() -> None:
    flavor, cluster_queue, local_queue, priority = load("kueue/team-nlp.yaml")
    queued = spec.load(ROOT / "jobs" / "kueue-queued.yaml")
    (run,) = sweep.expand(queued)
    docs = [yaml.safe_load(d) for _, d in render.render([run], namespace="ml-team")[0].documents]
    job = next(d for d in docs if d["kind"] == "Job")
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == local_queue["metadata"]["name"]
    assert local_queue["metadata"]["namespace"] == job["metadata"]["namespace"]
    assert local_queue["spec"]["clusterQueue"] == cluster_queue["metadata"]["name"]
    pod = job["spec"]["template"]["spec"]
    assert pod["priorityClassName"] == priority["metadata"]["name"]
    # A node with the flavor's labels (Kueue adds them to the pods' nodeSelector at
    # admission) satisfies one of the GPU terms the chart requires, so quota and pods agree.
    labels = flavor["spec"]["nodeLabels"]
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert any(
        all(labels.get(e["key"]) in e["values"] for e in term["matchExpressions"]) for term in terms
    )
    # Kueue's webhook suspends the Job; the manifest must not (a re-apply would re-suspend it).
    assert "suspend" not in job["spec"]
    (group,) = cluster_queue["spec"]["resourceGroups"]
    requested = set(pod["containers"][0]["resources"]["requests"])
    assert requested <= set(group["coveredResources"])
    (quota,) = group["flavors"]
    assert quota["name"] == flavor["metadata"]["name"]
    assert {r["name"] for r in quota["resources"]} == set(group["coveredResources"])
    selector = cluster_queue["spec"]["namespaceSelector"]["matchLabels"]
    assert selector == {"kubernetes.io/metadata.name": "ml-team"}
    kubernetes_validate.validate(priority, "1.33.0", strict=True)


# --- byte-stable output -----------------------------------------------------------------------

#: Two processes that differ in everything that might leak into output.
ENVIRONMENTS = (
    {"PYTHONHASHSEED": "1", "TZ": "UTC", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"},
    {"PYTHONHASHSEED": "4242", "TZ": "Pacific/Kiritimati", "LANG": "de_DE.UTF-8",
     "LC_ALL": "tr_TR.UTF-8"},
)  # fmt: skip
TIMESTAMP = re.compile(
    rb"creationTimestamp|\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}|\d{2}:\d{2}:\d{2}|\b1[6-9]\d{8}\b"
)


def written(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_render_out_is_byte_stable_across_processes_and_machines(
    tmp_path: Path, s3_env: str
) -> None:
    """Each machine renders the grid (nine runs, a values file each) and the multi-node job
    (a Service too), staging their inputs, in a process that differs in everything that might
    leak into output."""
    import boto3

    boto3.client("s3").create_bucket(Bucket="kubetune-runs")
    jobs = ("jobs/bbc-news-lr-lora-grid.yaml", "jobs/multi-node.yaml")
    outputs = []
    for index, extra in enumerate(ENVIRONMENTS):
        home, cwd = tmp_path / f"home{index}", tmp_path / f"cwd{index}"
        home.mkdir()
        laptop(cwd)  # the same data on two machines, in two folders: the same addresses
        out = tmp_path / f"out{index}"
        cli_sequence(
            [["render", str(ROOT / job), "-n", "ml-team", "--stage", "--out", str(out / job)]
             for job in jobs],
            cwd=cwd, env={**os.environ, **extra, "HOME": str(home)},
        )  # fmt: skip
        outputs.append(written(out))
    first, second = outputs
    assert sorted(first) == sorted(second)
    assert len(first) >= 2 * 3  # manifests, values, kustomization of each job
    for name in first:
        assert first[name] == second[name], name
    for name, data in first.items():
        assert not TIMESTAMP.search(data), f"{name}: {TIMESTAMP.search(data)}"
        assert str(tmp_path).encode() not in data, f"{name} holds a path of this machine"
