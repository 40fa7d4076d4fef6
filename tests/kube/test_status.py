"""What Jobs and pods say about runs: phases, pod states, rows, sweeps (pure, from literals)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest

from kubetune.kube import status as js
from kubetune.store.record import parse_record


def job(
    name: str = "bbc-topic-1c0ffee1",
    *,
    uid: str = "job-uid",
    spec: dict[str, Any] | None = None,
    status: dict[str, Any] | None = None,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    created: str = "2026-01-02T03:00:00Z",
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "uid": uid,
            "creationTimestamp": created,
            "labels": {
                "kubetune.io/run-id": name,
                "kubetune.io/sweep": "bbc-topic",
                **(labels or {}),
            },
            "annotations": annotations or {},
        },
        "spec": spec or {},
        "status": status or {},
    }


def condition(kind: str, reason: str = "") -> dict[str, Any]:
    return {"type": kind, "status": "True", "reason": reason}


def pod(
    name: str = "p",
    *,
    owner: str = "job-uid",
    index: int | None = None,
    phase: str = "Running",
    state: dict[str, Any] | None = None,
    last: dict[str, Any] | None = None,
    restarts: int = 0,
    node: str = "gpu-1",
    created: str = "2026-01-02T03:01:00Z",
    reason: str | None = None,
    conditions: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    labels = {"batch.kubernetes.io/job-completion-index": str(index)} if index is not None else {}
    container: dict[str, Any] = {"name": "trainer", "restartCount": restarts}
    if state is not None:
        container["state"] = state
    if last is not None:
        container["lastState"] = last
    status: dict[str, Any] = {"phase": phase, "containerStatuses": [container] if state else []}
    if reason:
        status["reason"] = reason
    if conditions:
        status["conditions"] = conditions
    return {
        "metadata": {
            "name": name,
            "creationTimestamp": created,
            "labels": labels,
            "ownerReferences": [{"uid": owner}],
        },
        "spec": {"nodeName": node},
        "status": status,
    }


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (job(status={"conditions": [condition("Complete")]}), "Succeeded"),
        (job(status={"conditions": [condition("SuccessCriteriaMet")]}), "Succeeded"),
        (
            job(status={"conditions": [condition("Failed", "BackoffLimitExceeded")]}),
            "Failed (BackoffLimitExceeded)",
        ),
        (
            job(status={"conditions": [condition("FailureTarget", "PodFailurePolicy")]}),
            "Failed (PodFailurePolicy)",
        ),
        (
            job(spec={"suspend": True}, labels={"kueue.x-k8s.io/queue-name": "team-q"}),
            "Queued (Kueue team-q)",
        ),
        (job(spec={"suspend": True}), "Suspended"),
        (job(status={"active": 1, "ready": 1}), "Running"),
        (job(status={"active": 1, "ready": 0}), "Pending"),
        (job(status={"failed": 1}), "Pending (retry after 1 failed)"),
        (job(), "Pending"),
        (
            job(
                status={
                    "conditions": [{"type": "Complete", "status": "False"}],
                    "active": 2,
                    "ready": 2,
                }
            ),
            "Running",
        ),
    ],
)
def test_job_phase(obj: dict[str, Any], expected: str) -> None:
    assert str(js.job_phase(obj)) == expected


def test_a_job_being_deleted_is_terminating() -> None:
    obj = job(status={"active": 1, "ready": 1})
    obj["metadata"]["deletionTimestamp"] = "2026-01-02T04:00:00Z"
    assert str(js.job_phase(obj)) == "Terminating"


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (pod(state={"running": {}}), "Running"),
        (
            pod(phase="Pending", state={"waiting": {"reason": "ContainerCreating"}}),
            "ContainerCreating",
        ),
        (
            pod(phase="Pending", state={"waiting": {"reason": "ImagePullBackOff"}}),
            "ImagePullBackOff",
        ),
        (pod(phase="Pending", state={"waiting": {"reason": "ErrImagePull"}}), "ErrImagePull"),
        (
            pod(
                state={"waiting": {"reason": "CrashLoopBackOff"}},
                last={"terminated": {"reason": "Error", "exitCode": 1}},
            ),
            "CrashLoopBackOff (exit 1)",
        ),
        (
            pod(phase="Failed", state={"terminated": {"reason": "OOMKilled", "exitCode": 137}}),
            "OOMKilled (exit 137)",
        ),
        (
            pod(phase="Succeeded", state={"terminated": {"reason": "Completed", "exitCode": 0}}),
            "Completed (exit 0)",
        ),
        (pod(phase="Failed", reason="Evicted", state={"terminated": {"exitCode": 137}}), "Evicted"),
        (
            pod(
                phase="Pending",
                conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}],
            ),
            "Pending (Unschedulable)",
        ),
        (pod(phase="Pending"), "Pending"),
    ],
)
def test_pod_state(obj: dict[str, Any], expected: str) -> None:
    assert js.pod_state(obj) == expected


def test_pods_view_shows_the_newest_pod_and_counts_retries_as_restarts() -> None:
    failed = pod(
        "p-1",
        phase="Failed",
        state={"terminated": {"reason": "OOMKilled", "exitCode": 137}},
        created="2026-01-02T03:01:00Z",
        node="gpu-1",
    )
    retry = pod("p-2", state={"running": {}}, created="2026-01-02T03:05:00Z", node="gpu-2")
    view = js.pods_view([retry, failed])
    assert view == js.PodsView("Running", 1, "gpu-2")


def test_pods_view_of_a_multi_node_run_shows_the_rank_in_trouble() -> None:
    rank0 = pod("p-0", index=0, state={"running": {}}, node="gpu-1", restarts=1)
    rank1 = pod(
        "p-1",
        index=1,
        phase="Pending",
        state={"waiting": {"reason": "ImagePullBackOff"}},
        node="gpu-2",
    )
    assert js.pods_view([rank0, rank1]) == js.PodsView(
        "rank 1: ImagePullBackOff", 1, "gpu-1, gpu-2"
    )
    healthy = pod("p-1", index=1, state={"running": {}}, node="gpu-2")
    assert js.pods_view([rank0, healthy]).state == "rank 0: Running"
    assert js.pods_view([]) == js.PodsView()


def test_rows_join_pods_to_their_job_by_owner_and_list_unsubmitted_runs() -> None:
    params = '{"train.learning_rate":2e-05}'
    current = job(uid="new", annotations={"kubetune.io/params": params}, status={"active": 1})
    stale = pod("old-pod", owner="old", state={"terminated": {"reason": "Error", "exitCode": 1}})
    mine = pod(
        "new-pod", owner="new", phase="Pending", state={"waiting": {"reason": "ErrImagePull"}}
    )
    rows = js.rows(
        [current],
        [stale, mine],
        expected={"bbc-topic-1c0ffee1": {}, "bbc-topic-0ddba11a": {"train.learning_rate": 5e-5}},
        metrics={"bbc-topic-1c0ffee1": "test accuracy 0.9821"},
    )
    # In the spec's order, not by id.
    assert [r.run_id for r in rows] == ["bbc-topic-1c0ffee1", "bbc-topic-0ddba11a"]
    submitted, waiting = rows
    assert waiting.phase == js.NOT_SUBMITTED and waiting.params == {"train.learning_rate": 5e-5}
    assert submitted.params == {"train.learning_rate": 2e-5}
    assert submitted.pods == js.PodsView("ErrImagePull", 0, "gpu-1"), "the old Job's pod is not it"
    assert submitted.metric == "test accuracy 0.9821"
    assert submitted.created == datetime(2026, 1, 2, 3, 0, tzinfo=UTC)


def test_status_table_has_a_column_per_parameter_and_ages() -> None:
    from rich.console import Console

    rows = [
        js.RunRow(
            "r-1",
            {"train.learning_rate": 1e-5},
            js.Phase("Running"),
            js.PodsView("Running", 0, "n1"),
            datetime(2026, 1, 2, 3, 0, tzinfo=UTC),
        ),
        js.RunRow("r-2", {"train.learning_rate": 2e-5}, js.Phase("Failed", "DeadlineExceeded")),
    ]
    console = Console(width=200, record=True)
    console.print(
        js.status_table("sweep x in ml", rows, now=datetime(2026, 1, 2, 3, 12, 5, tzinfo=UTC))
    )
    text = console.export_text()
    assert "train.learning_rate" in text
    assert "r-1" in text.splitlines()[4], "rows in the order given"
    line1 = next(line for line in text.splitlines() if "r-1" in line)
    assert [c.strip() for c in line1.strip("│").split("│")] == [
        "r-1",
        "1e-05",
        "Running",
        "Running",
        "0",
        "n1",
        "12m05s",
        "—",
    ]
    line2 = next(line for line in text.splitlines() if "r-2" in line)
    assert "Failed (DeadlineExceeded)" in line2


def test_sweeps_count_runs_per_phase() -> None:
    jobs = [
        job(
            "a-1", labels={"kubetune.io/sweep": "a"}, status={"conditions": [condition("Complete")]}
        ),
        job(
            "a-2",
            labels={"kubetune.io/sweep": "a"},
            status={"active": 1, "ready": 1},
            created="2026-01-02T05:00:00Z",
        ),
        job("a-3", labels={"kubetune.io/sweep": "a"}, status={"active": 1, "ready": 1}),
        job("b-1", labels={"kubetune.io/sweep": "b"}, spec={"suspend": True}),
    ]
    a, b = js.sweeps(jobs)
    assert (a.sweep, a.runs, a.phases) == ("a", 3, Counter({"Running": 2, "Succeeded": 1}))
    assert a.newest == datetime(2026, 1, 2, 5, 0, tzinfo=UTC)
    assert (b.sweep, b.phases) == ("b", Counter({"Suspended": 1}))


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (
            {"metrics": {"test": {"accuracy": 0.98214, "runtime": 3.0}, "eval": {"accuracy": 0.9}}},
            "test accuracy 0.9821",
        ),
        ({"metrics": {"eval": {"f1": 0.5}}}, "eval f1 0.5000"),
        ({"metrics": {"test": {"runtime": 3.0}}}, "—"),
        ({"status": "running"}, "—"),
        # The task's headline comes first, though another metric ranks higher across tasks.
        (
            {"task": "causal-lm", "metrics": {"eval": {"loss": 2.0, "perplexity": 7.389}}},
            "eval perplexity 7.3890",
        ),
        ({"task": "ner", "metrics": {"test": {"accuracy": 0.99, "f1": 0.81}}}, "test f1 0.8100"),
    ],
)
def test_headline_metric_of_a_record(record: dict[str, Any], expected: str) -> None:
    assert js.metric_cell(parse_record(record)) == expected


def test_trainer_env_reads_literal_values_only() -> None:
    obj = job(
        spec={
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "trainer",
                            "env": [
                                {"name": "KUBETUNE_STORE", "value": "s3://runs/x"},
                                {"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {}}},
                            ],
                        }
                    ]
                }
            }
        }
    )
    assert js.trainer_env(obj) == {"KUBETUNE_STORE": "s3://runs/x"}


# --- pods that cannot start ---------------------------------------------------------------

IMAGE = "ghcr.io/kubetune/kubetune-trainer@sha256:" + "ab" * 32
NOW = datetime(2026, 1, 2, 5, 14, tzinfo=UTC)


def waiting(reason: str, message: str = "", **status: Any) -> dict[str, Any]:
    """A trainer pod in namespace ml-team, acknowledged by the kubelet at 03:01."""
    stuck = pod(state={"waiting": {"reason": reason, "message": message}}, phase="Pending")
    stuck["metadata"]["namespace"] = "ml-team"
    stuck["status"]["containerStatuses"][0]["image"] = IMAGE
    stuck["status"]["startTime"] = "2026-01-02T03:01:00Z"
    stuck["status"].update(status)
    return stuck


@pytest.mark.parametrize(
    ("reason", "message", "expected"),
    [
        # The kubelet's words for an env var whose Secret (or ConfigMap, or key) is missing.
        (
            "CreateContainerConfigError",
            'secret "kubetune-s3" not found',
            'secret kubetune-s3 not found in ml-team for 2h13m: create it (README "Secrets '
            'for S3 and W&B")',
        ),
        (  # the older kubelets' wording
            "CreateContainerConfigError",
            'secrets "kubetune-s3" not found',
            "secret kubetune-s3 not found in ml-team for 2h13m: create it",
        ),
        (
            "CreateContainerConfigError",
            "couldn't find key WANDB_API_KEY in Secret ml-team/wandb-api-key",
            "secret wandb-api-key in ml-team has no key WANDB_API_KEY for 2h13m: add it "
            '(README "Secrets for S3 and W&B")',
        ),
        (
            "CreateContainerConfigError",
            'configmap "bbc-topic-1c0ffee1" not found',
            "ConfigMap bbc-topic-1c0ffee1 not found in ml-team for 2h13m: submit the run again "
            "(it re-creates its ConfigMap) or kubetune cancel it",
        ),
        (
            "ErrImagePull",
            f'failed to pull and unpack image "{IMAGE}": failed to resolve reference '
            f'"{IMAGE}": {IMAGE}: not found',
            f"image {IMAGE} not found for 2h13m: push it, or pin one that exists (--image / "
            "spec image)",
        ),
        (
            "ImagePullBackOff",
            f'Back-off pulling image "{IMAGE}": ErrImagePull: failed to authorize: failed to '
            "fetch anonymous token: 401 Unauthorized",
            f"image {IMAGE} cannot be pulled for 2h13m: the registry refused (Back-off pulling",
        ),
        (
            "ImagePullBackOff",
            f'Back-off pulling image "{IMAGE}"',
            f'image {IMAGE} cannot be pulled for 2h13m: Back-off pulling image "{IMAGE}"',
        ),
        (
            "InvalidImageName",
            'Failed to apply default image tag "Ghcr.io/x": couldn\'t parse image name '
            '"Ghcr.io/x": invalid reference format',
            f"image name {IMAGE} is invalid for 2h13m: fix the spec's image",
        ),
        (
            "ContainerCreating",
            "",
            "pod p has waited for 2h13m to start (ContainerCreating): its image may still be "
            "pulling, or a Secret volume cannot mount; kubectl describe pod -n ml-team p shows "
            "which",
        ),
    ],
)
def test_stuck_says_what_is_wrong_for_how_long_and_what_to_do(
    reason: str, message: str, expected: str
) -> None:
    found = js.stuck(waiting(reason, message), NOW)
    assert found is not None and found.startswith(expected), found
    assert "\n" not in found


def test_a_pod_on_its_way_or_running_is_not_stuck() -> None:
    assert js.stuck(waiting("ContainerCreating"), datetime(2026, 1, 2, 3, 4, tzinfo=UTC)) is None
    assert js.stuck(pod(state={"running": {}}), NOW) is None
    assert js.stuck(pod(state={"waiting": {"reason": "CrashLoopBackOff"}}), NOW) is None


def test_stuck_counts_from_the_kubelet_then_scheduling_then_creation() -> None:
    scheduled = [
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-01-02T05:00:00Z"}
    ]
    unstarted = waiting("ErrImagePull", "not found", conditions=scheduled)
    del unstarted["status"]["startTime"]
    assert "not found for 14m00s:" in str(js.stuck(unstarted, NOW))
    del unstarted["status"]["conditions"]
    assert "not found for 2h13m:" in str(js.stuck(unstarted, NOW))  # created 03:01


def test_rows_carry_the_problem_of_any_ranks_newest_pod() -> None:
    ok = pod("rank0", index=0, state={"running": {}})
    bad = waiting("CreateContainerConfigError", 'secret "kubetune-s3" not found')
    bad["metadata"]["labels"] = {"batch.kubernetes.io/job-completion-index": "1"}
    (row,) = js.rows([job()], [ok, bad], now=NOW)
    assert row.problem.startswith("secret kubetune-s3 not found in ml-team for 2h13m")
    assert js.problem_lines([row]) == [f"run bbc-topic-1c0ffee1: {row.problem}"]
    (fine,) = js.rows([job()], [ok], now=NOW)
    assert fine.problem == "" and js.problem_lines([fine]) == []


def test_a_pod_whose_config_map_volume_is_missing_is_stuck_at_once() -> None:
    creating = waiting("ContainerCreating")
    creating["spec"]["volumes"] = [
        {"name": "spec", "configMap": {"name": "bbc-topic-1c0ffee1"}},
        {"name": "scratch", "emptyDir": {}},
    ]
    soon = datetime(2026, 1, 2, 3, 2, tzinfo=UTC)
    assert js.config_map_volumes(creating) == ["bbc-topic-1c0ffee1"]
    assert js.stuck(creating, soon) is None, "it may be on its way"
    assert js.stuck(creating, soon, {"bbc-topic-1c0ffee1"}) == (
        "ConfigMap bbc-topic-1c0ffee1 not found in ml-team for 1m00s: submit the run again "
        "(it re-creates its ConfigMap) or kubetune cancel it"
    )


def test_status_table_at_60_columns_keeps_run_ids_and_parameter_values_whole() -> None:
    from rich.console import Console

    points = (("29ed0de5", 2e-5, 8), ("0a1b2c3d", 1e-4, 16))
    params = [{"train.learning_rate": lr, "lora.r": r} for _h, lr, r in points]
    rows = [
        js.RunRow(f"bbc-news-grid-{h}", p, js.Phase("Running"))
        for (h, _lr, _r), p in zip(points, params, strict=True)
    ]
    console = Console(width=60, record=True, soft_wrap=True)  # as the CLI's console
    console.print(js.status_table("sweep bbc-news-grid in ml", rows))
    lines = [line for line in console.export_text().splitlines() if "bbc-news-grid-" in line]
    assert "│ bbc-news-grid-29ed0de5 │ 2e-05 " in lines[0] and "│ 8 " in lines[0]
    assert "│ bbc-news-grid-0a1b2c3d │ 0.0001 " in lines[1] and "│ 16 " in lines[1]
    assert all("│ Running " in line for line in lines)
