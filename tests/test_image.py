"""The trainer image's Dockerfile agrees with the project: every pin it names is checked
against the place the project pins it, so a bump in one place only fails here."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubetune import launch, render, spec, sweep

from conftest import ROOT, base_spec

DOCKERFILE = ROOT / "images" / "trainer" / "Dockerfile"
CHART = ROOT / "charts" / "kubetune-job"


@dataclass
class Stage:
    name: str
    base: str
    args: dict[str, str] = field(default_factory=dict)
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [rest for kw, rest in self.instructions if kw == keyword]


@dataclass
class Dockerfile:
    global_args: dict[str, str]
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)

    def args(self) -> dict[str, str]:
        """Every ARG default, global and per stage (names are unique in this file)."""
        found = dict(self.global_args)
        for stage in self.stages:
            for name, value in stage.args.items():
                assert name not in found or found[name] == value, f"ARG {name} differs"
                found[name] = value
        return found


def parse(path: Path) -> Dockerfile:
    """Instructions as Docker reads them: comments dropped, continuations joined."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            image, _, name = rest.partition(" AS ")
            stages.append(Stage(name=name.strip(), base=image.strip()))
        elif keyword == "ARG":
            name, _, default = rest.partition("=")
            (stages[-1].args if stages else global_args)[name] = default
        else:
            assert stages, f"{keyword} before the first FROM"
            stages[-1].instructions.append((keyword, rest))
    return Dockerfile(global_args, stages)


def env_of(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for rest in stage.all("ENV"):
        for item in shlex.split(rest):
            key, _, value = item.partition("=")
            env[key] = value
    return env


def substitute(text: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], text)


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return parse(DOCKERFILE)


@pytest.fixture(scope="module")
def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def rendered_pod() -> dict[str, Any]:
    """The pod of a one-GPU run as the chart renders it."""
    (run,) = render.render(sweep.expand(spec.validate(base_spec())))
    docs = [yaml.safe_load(doc) for _, doc in run.documents]
    job = next(d for d in docs if d["kind"] == "Job")
    pod: dict[str, Any] = job["spec"]["template"]["spec"]
    return pod


def makefile_var(name: str) -> str:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    match = re.search(rf"^{name}\s*:?=\s*(\S+)", text, re.MULTILINE)
    assert match, f"Makefile sets no {name}"
    return match.group(1)


def locked(package: str) -> str:
    text = (ROOT / "constraints.txt").read_text(encoding="utf-8")
    match = re.search(rf"^{package}==(\S+)", text, re.MULTILINE)
    assert match, f"constraints.txt pins no {package}"
    return match.group(1)


# --- the stages -----------------------------------------------------------------------------


def test_multi_stage_runtime_gets_only_the_interpreter_and_the_venv(dockerfile: Dockerfile) -> None:
    assert [s.name for s in dockerfile.stages] == ["base", "builder", "runtime"]
    assert dockerfile.stage("builder").base == dockerfile.stage("runtime").base == "base"
    runtime = dockerfile.stage("runtime")
    copies = runtime.all("COPY")
    assert copies == [
        "--from=builder /opt/python /opt/python",
        "--from=builder /opt/venv /opt/venv",
    ]
    # No package manager, compiler or build tool in the image that runs.
    for run in runtime.all("RUN"):
        assert not re.search(r"\b(apt-get|pip|uv|gcc)\b", run), run


def test_every_version_pin_is_an_arg_that_a_test_checks(dockerfile: Dockerfile) -> None:
    versions = {name for name in dockerfile.args() if name.endswith("_VERSION")}
    assert versions == {"PYTHON_VERSION", "UV_VERSION", "TORCH_VERSION"}
    for stage in dockerfile.stages:
        for keyword, rest in stage.instructions:
            # A literal `pkg==1.2` would be a pin no test holds to the project.
            assert not re.search(r"==\s*\d", rest), f"{keyword} {rest}"


def test_base_is_the_cuda_runtime_of_the_torch_build_pinned_by_digest(
    dockerfile: Dockerfile,
) -> None:
    args = dockerfile.args()
    # One FROM for both flavours: the CUDA runtime by digest unless BASE_IMAGE says otherwise.
    assert dockerfile.stage("base").base == "${BASE_IMAGE}"
    assert dockerfile.global_args["BASE_IMAGE"] == "${CUDA_IMAGE}@${CUDA_DIGEST}"
    match = re.fullmatch(
        r"nvidia/cuda:(\d+)\.(\d+)\.(\d+)-cudnn-runtime-ubuntu22\.04", args["CUDA_IMAGE"]
    )
    assert match, args["CUDA_IMAGE"]
    major, minor, _patch = match.groups()
    assert args["TORCH_CUDA"] == f"cu{major}{minor}"
    # Either a real digest, or a placeholder that is visibly none (make image refuses it).
    digest = args["CUDA_DIGEST"]
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest) or digest.startswith("PLACEHOLDER")


def test_python_comes_from_uv_or_from_a_base_of_the_same_minor(dockerfile: Dockerfile) -> None:
    args = dockerfile.args()
    assert args["PYTHON_SOURCE"] == "uv"  # the CUDA base's own python3 is 3.10
    (bootstrap,) = [r for r in dockerfile.stage("builder").all("RUN") if "uv venv" in r]
    branches = dict(re.findall(r"(\w+)\) (.*?);;", bootstrap))
    assert set(branches) == {"uv", "system"}
    assert 'uv python install --managed-python --no-bin "${PYTHON_VERSION}"' in branches["uv"]
    assert "--no-managed-python" in branches["system"]
    assert "mkdir -p /opt/python" in branches["system"]
    # Whatever the source, the build fails unless the venv has the pinned minor version.
    assert "assert v == '${PYTHON_VERSION%.*}'" in bootstrap
    # The CPU flavour's base is Debian bookworm, whose python3 is 3.11: the pinned minor.
    script = (ROOT / "scripts" / "image-cpu.sh").read_text(encoding="utf-8")
    assert re.search(r"debootstrap .*--include=python3,ca-certificates \\\n\s+bookworm ", script)
    assert args["PYTHON_VERSION"].startswith("3.11.")


# --- pins against the project ---------------------------------------------------------------


def test_torch_is_the_locked_version(dockerfile: Dockerfile, pyproject: dict[str, Any]) -> None:
    args = dockerfile.args()
    version = args["TORCH_VERSION"]
    # The lock holds the CPU wheel of the same version; the image takes its TORCH_CUDA build.
    assert locked("torch") == f"{version}+cpu"
    assert f"torch=={version}" in pyproject["project"]["optional-dependencies"]["train"]
    assert args["TORCH_INDEX"] == "https://download.pytorch.org/whl/${TORCH_CUDA}"
    install = " ".join(dockerfile.stage("builder").all("RUN"))
    assert 'torch_index="--index-url=${TORCH_INDEX}"' in install
    # TORCH_INDEX=none: only the wheels the build context brings (images/trainer/wheels/).
    assert '[ "${TORCH_INDEX}" = none ]; then torch_index=--no-index;' in install
    assert "--find-links /wheels" in install
    assert "images/trainer/wheels/ /wheels/" in dockerfile.stage("builder").all("COPY")
    assert '"torch==${TORCH_VERSION}+${TORCH_CUDA}"' in install
    assert "-c /tmp/constraints.txt" in install and '".[${EXTRAS}]"' in install
    assert args["EXTRAS"] == "train,serve"


def test_cpu_build_takes_the_locked_cpu_wheel(tmp_path: Path) -> None:
    """image-cpu.sh finds the wheel by the version constraints.txt pins, and git keeps every
    wheel it copies into the build context out of the repository."""
    script = (ROOT / "scripts" / "image-cpu.sh").read_text(encoding="utf-8")
    assert "s/^torch==\\(.*\\)+cpu$/\\1/p' constraints.txt" in script
    assert 'cp "$wheel" images/trainer/wheels/' in script
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs the git checkout")
    wheel = f"images/trainer/wheels/torch-{locked('torch')}-cp311-cp311-linux_x86_64.whl"
    check = ["git", "check-ignore", "-q"]
    assert subprocess.run([*check, wheel], cwd=ROOT).returncode == 0
    assert subprocess.run([*check, "images/trainer/wheels/README.md"], cwd=ROOT).returncode == 1


def test_every_build_arg_passed_is_one_the_dockerfile_declares(dockerfile: Dockerfile) -> None:
    """make image, the CPU build and the kind script pass only ARGs that exist (a misspelt
    --build-arg is silently ignored by buildx and buildah alike)."""
    declared = set(dockerfile.args())
    for path in ("Makefile", "scripts/image-cpu.sh"):
        text = (ROOT / path).read_text(encoding="utf-8")
        passed = set(re.findall(r"--build-arg (\w+)=", text))
        assert passed and passed <= declared, (path, passed - declared)
    # The kind script passes them through make image's variables.
    kind = (ROOT / "scripts" / "kind-e2e.sh").read_text(encoding="utf-8")
    (call,) = re.findall(r"make --no-print-directory image (.*?)\n\n", kind, re.DOTALL)
    variables = set(re.findall(r"(?:^|\s)([A-Z_]+)=", call))
    make_vars = {"IMAGE", "IMAGE_OUTPUT", "IMAGE_EXTRAS", "BASE_IMAGE", "PYTHON_SOURCE",
                 "TORCH_CUDA", "TORCH_INDEX", "CUDA_DIGEST"}  # fmt: skip
    assert variables <= make_vars, variables - make_vars
    assert "--provenance=false" in call  # kind#3795: attestations break kind's side-load


def test_python_is_the_projects(dockerfile: Dockerfile, pyproject: dict[str, Any]) -> None:
    version = dockerfile.args()["PYTHON_VERSION"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", version), "pin a patch release"
    minor = version.rsplit(".", 1)[0]
    assert pyproject["project"]["requires-python"] == f">={minor}"
    assert pyproject["tool"]["mypy"]["python_version"] == minor
    assert pyproject["tool"]["ruff"]["target-version"] == "py" + minor.replace(".", "")
    # constraints.txt is resolved for this Python (make lock).
    assert f"--python-version {minor}" in (ROOT / "Makefile").read_text(encoding="utf-8")


def test_uv_is_the_makefiles(dockerfile: Dockerfile) -> None:
    assert dockerfile.args()["UV_VERSION"] == makefile_var("UV_VERSION")


def test_uv_can_install_the_pinned_python(dockerfile: Dockerfile) -> None:
    uv = ROOT / ".venv" / "bin" / "uv"
    if not uv.exists():
        pytest.skip("uv comes with make test's .venv")
    version = dockerfile.args()["PYTHON_VERSION"]
    listing = subprocess.run(
        [str(uv), "python", "list", version, "--all-versions", "--only-downloads",
         "--all-platforms"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    assert f"cpython-{version}-linux-x86_64-gnu" in listing


def test_user_is_the_charts_pod_security(dockerfile: Dockerfile) -> None:
    pod_security = yaml.safe_load((CHART / "values.yaml").read_text())["podSecurity"]
    args = dockerfile.args()
    assert int(args["UID"]) == pod_security["runAsUser"]
    assert int(args["GID"]) == pod_security["runAsGroup"] == pod_security["fsGroup"]
    runtime = dockerfile.stage("runtime")
    (user,) = runtime.all("USER")
    assert substitute(user, args) == f"{args['UID']}:{args['GID']}"
    (useradd,) = [r for r in runtime.all("RUN") if "useradd" in r]
    assert '--uid "${UID}"' in useradd and '--gid "${GID}"' in useradd


def test_writable_directories_are_the_charts(
    dockerfile: Dockerfile, rendered_pod: dict[str, Any]
) -> None:
    (container,) = rendered_pod["containers"]
    chart_env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    mounts = [m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")]
    image_env = env_of(dockerfile.stage("runtime"))
    for name in ("HOME", "HF_HOME", "WANDB_DIR", "XDG_CACHE_HOME", "TMPDIR"):
        assert image_env[name] == chart_env[name], name
        # Under a writable emptyDir of the pod: the root filesystem is read-only there.
        assert any(image_env[name] == m or image_env[name].startswith(m + "/") for m in mounts)
    made = " ".join(r for r in dockerfile.stage("runtime").all("RUN") if "mkdir" in r)
    for name in ("HOME", "HF_HOME", "WANDB_DIR", "XDG_CACHE_HOME"):
        assert image_env[name] in made.split(), f"{name} is not created for docker run"


def test_default_command_is_the_charts_launch_line(
    dockerfile: Dockerfile, rendered_pod: dict[str, Any]
) -> None:
    runtime = dockerfile.stage("runtime")
    assert runtime.all("ENTRYPOINT") == []  # the chart's command replaces the image's
    (cmd,) = runtime.all("CMD")
    command = json.loads(cmd)
    assert command == launch.accelerate_command(launch.SPEC_PATH, gpus=1)
    assert command == rendered_pod["containers"][0]["command"]
    # `python` there is the venv's, which holds kubetune and the trainer stack.
    assert env_of(runtime)["PATH"].startswith("/opt/venv/bin:")
    builder_runs = " ".join(dockerfile.stage("builder").all("RUN"))
    assert re.search(r"uv venv --(no-)?managed-python --python \S+ /opt/venv", builder_runs)


def test_build_context_holds_what_the_dockerfile_copies(dockerfile: Dockerfile) -> None:
    ignore = DOCKERFILE.with_name("Dockerfile.dockerignore").read_text().split("\n")
    patterns = [p.strip() for p in ignore if p.strip() and not p.startswith("#")]
    assert patterns[0] == "*"  # an allowlist: the .venv, runs and data stay out
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    sources = []
    for rest in dockerfile.stage("builder").all("COPY"):
        sources += [s.rstrip("/") for s in rest.split()[:-1] if not s.startswith("--")]
    assert set(sources) == allowed
    assert all((ROOT / s).exists() for s in sources)


def test_image_pod_runs_the_rendered_container_as_its_pod(tmp_path: Path) -> None:
    """make image-cpu-e2e's kubelet stand-in (scripts/image_pod.py) hands buildah exactly the
    rendered pod: its user, every env entry in order (Secrets filled), every mount."""
    loader = importlib.util.spec_from_file_location("image_pod", ROOT / "scripts" / "image_pod.py")
    assert loader and loader.loader
    image_pod = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(image_pod)
    data = base_spec(
        data={"train": "s3://runs/data/train.jsonl", "eval": "s3://runs/data/eval.jsonl"},
        resources={"gpus": 0, "cpu": "2", "memory": "4Gi", "shm_size": "1Gi"},
        tracking={"wandb": {"project": "p"}},
    )
    (run,) = render.render(sweep.expand(spec.validate(data)))
    docs = [yaml.safe_load(doc) for _, doc in run.documents]
    job = next(d for d in docs if d["kind"] == "Job")
    (container,) = job["spec"]["template"]["spec"]["containers"]

    options, command = image_pod.pod_run(docs, tmp_path, chown=False)

    assert command == [*container["command"], *container.get("args", [])]
    assert "--cpu" in command
    assert options[:4] == ["--isolation", "chroot", "--user", "10001:10001"]
    env = [options[i + 1] for i, option in enumerate(options) if option == "--env"]
    assert [item.split("=", 1)[0] for item in env] == [e["name"] for e in container["env"]]
    assert "AWS_ACCESS_KEY_ID=testing" in env and "HOME=/scratch/home" in env
    volumes = {}
    for i, option in enumerate(options):
        if option == "--volume":
            source, target, mode = options[i + 1].split(":")
            volumes[target] = (Path(source), mode)
    assert set(volumes) == {m["mountPath"] for m in container["volumeMounts"]}
    spec_dir, mode = volumes[str(Path(launch.SPEC_PATH).parent)]
    configmap = next(d for d in docs if d["kind"] == "ConfigMap")
    assert mode == "ro"
    assert (spec_dir / "spec.yaml").read_text() == configmap["data"]["spec.yaml"]
    assert stat.S_IMODE((spec_dir / "spec.yaml").stat().st_mode) == 0o444
    for path in ("/scratch", "/tmp"):
        assert volumes[path][1] == "rw" and not any(volumes[path][0].iterdir())


# --- make image -----------------------------------------------------------------------------


@pytest.fixture
def fake_docker(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """A `docker` on PATH that answers every call and records it."""
    calls = tmp_path / "calls"
    tool = tmp_path / "bin" / "docker"
    tool.parent.mkdir()
    tool.write_text(f'#!/bin/sh\necho "$*" >> {calls}\n')
    tool.chmod(0o755)
    env = {**os.environ, "PATH": f"{tool.parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("CUDA_DIGEST", None)
    return env, calls


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_image_refuses_a_base_without_a_digest(
    dockerfile: Dockerfile, fake_docker: tuple[dict[str, str], Path]
) -> None:
    env, calls = fake_docker
    if not dockerfile.args()["CUDA_DIGEST"].startswith("PLACEHOLDER"):
        pytest.skip("the Dockerfile pins a real digest")
    proc = subprocess.run(
        ["make", "--no-print-directory", "image"], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "CUDA_DIGEST" in proc.stderr and "imagetools inspect nvidia/cuda:" in proc.stderr
    assert "buildx build" not in calls.read_text()


def _make_image_build(fake_docker: tuple[dict[str, str], Path], *variables: str) -> list[str]:
    """``make image VARIABLES`` against the fake docker: the one buildx build it ran."""
    env, calls = fake_docker
    proc = subprocess.run(
        ["make", "--no-print-directory", "image", *variables],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (build,) = [c for c in calls.read_text().splitlines() if c.startswith("buildx build")]
    return build.split()


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_image_builds_with_the_given_digest_and_variant(
    fake_docker: tuple[dict[str, str], Path],
) -> None:
    digest = "sha256:" + "0f" * 32
    build = _make_image_build(
        fake_docker, f"CUDA_DIGEST={digest}", "TORCH_CUDA=cpu", "IMAGE=kubetune-trainer:test"
    )
    assert build == [
        "buildx", "build", "-f", "images/trainer/Dockerfile",
        "--build-arg", f"CUDA_DIGEST={digest}", "--build-arg", "TORCH_CUDA=cpu",
        "-t", "kubetune-trainer:test", "--load", ".",
    ]  # fmt: skip


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_image_on_another_base_needs_no_cuda_digest(
    fake_docker: tuple[dict[str, str], Path],
) -> None:
    build = _make_image_build(
        fake_docker, "BASE_IMAGE=debian:bookworm-slim", "PYTHON_SOURCE=uv", "TORCH_CUDA=cpu",
        "TORCH_INDEX=none", "IMAGE=kubetune-trainer:cpu", "IMAGE_OUTPUT=--load --provenance=false",
    )  # fmt: skip
    assert build == [
        "buildx", "build", "-f", "images/trainer/Dockerfile",
        "--build-arg", "BASE_IMAGE=debian:bookworm-slim", "--build-arg", "PYTHON_SOURCE=uv",
        "--build-arg", "TORCH_CUDA=cpu", "--build-arg", "TORCH_INDEX=none",
        "-t", "kubetune-trainer:cpu", "--load", "--provenance=false", ".",
    ]  # fmt: skip


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_image_says_what_is_missing_without_docker(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    for tool in ("sh", "sed", "grep", "echo"):  # what the recipe needs besides docker
        if found := shutil.which(tool):
            (empty / tool).symlink_to(found)
    make = shutil.which("make")
    assert make
    proc = subprocess.run(
        [make, "--no-print-directory", "image"], cwd=ROOT, capture_output=True, text=True,
        env={"PATH": str(empty)}, timeout=60,
    )  # fmt: skip
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[0] == (
        "error: make image needs docker: https://docs.docker.com/engine/install/"
    )
