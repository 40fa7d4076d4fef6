"""Trials of a driven sweep as Kubernetes Jobs: the executor of ``kubetune drive``, the sweep
driver's pod (:class:`~kubetune.search.driver.Driver` with ``where="pod <name>"``).

A trial is rendered exactly as ``kubetune submit`` renders a run (:func:`kubetune.render.render`,
the same chart) and created with the same code (:func:`kubetune.kube.submit.create`: its
dependents, its Job, their ownerReferences to the Job), so a trial's pod is a run's pod. Two
things differ:

- its Job carries an ownerReference to the driver's own Job. Argo CD and Flux apply the
  driver from git; the trials are not there. Argo CD tracks what it manages by the
  ``argocd.argoproj.io/tracking-id`` annotation (annotation tracking, the default since 3.0)
  or by the ``app.kubernetes.io/instance`` label set to the Application's name (label
  tracking); a trial carries neither (its instance label is its run id, the chart's own),
  and Argo CD treats an object with an ownerReference as a child of its owner, never as a
  stray to prune. Flux prunes only what its inventory lists. When the driver's Job goes
  (``kubetune cancel``, its TTL, a GitOps prune), the garbage collector takes the trials;
- launching is idempotent, and also how the driver retries and resumes: a trial whose Job
  exists and runs is left alone; one whose Job finished (failed, or stopped otherwise) is
  replaced (deleted, waited for, created again) and resumes from its checkpoint.

What a trial's Job says becomes the driver's :data:`~kubetune.search.driver.Running`: its
conditions (Complete → succeeded; Failed → failed, or config-error where the chart's
podFailurePolicy failed it because the trainer exited 2, the one ``FailJob`` rule; a trainer
that exited 130 after storing a checkpoint is retried by the Job itself without counting);
suspended, pending or active → running; no Job → unknown.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from kubetune import render
from kubetune.kube import client as kube
from kubetune.kube import submit
from kubetune.kube.names import CONTAINER, RUN_ID_LABEL
from kubetune.search.driver import Running
from kubetune.sweep import ResolvedRun

#: The trainer's exit code for a refused spec or data (the chart's job.configErrorExitCode).
CONFIG_ERROR_EXIT = 2


class JobExecutor:
    """Run each trial as a Job in ``namespace`` (see the module docstring).

    ``owner`` is the driver's Job as an ownerReference (:func:`owner_of`); ``inputs`` the
    sweep's staged inputs (the driver pod's ``KUBETUNE_INPUTS``), recorded by every trial.
    """

    def __init__(
        self,
        target: kube.Cluster,
        namespace: str,
        *,
        owner: dict[str, Any] | None = None,
        inputs: dict[str, dict[str, str]] | None = None,
    ) -> None:
        self.target = target
        self.namespace = namespace
        self.owner = owner
        self.inputs = dict(inputs or {})

    def manifests(self, run: ResolvedRun) -> list[submit.Manifest]:
        """The trial's documents as ``kubetune submit`` would create them, its Job owned by
        the driver's."""
        if self.inputs and not run.inputs:
            run = replace(run, inputs=self.inputs)
        (item,) = render.render([run], self.namespace)
        docs = submit.manifests(item)
        if self.owner is None:
            return docs
        return [submit.with_owner(d, self.owner) if d.kind is kube.JOB else d for d in docs]

    def launch(self, run: ResolvedRun) -> None:
        docs = self.manifests(run)
        name = submit.job_manifest(docs).name
        existing = self.target.get(kube.JOB, self.namespace, name)
        if existing is None:
            submit.create(self.target, self.namespace, docs)
            return
        if _finished(existing) or (existing.get("metadata") or {}).get("deletionTimestamp"):
            # The driver asks again for a run whose Job ended: a retry, or a resume.
            submit.replace_job(self.target, self.namespace, docs, existing)
            return
        # Running already (a driver that restarted): finish an adoption cut off before.
        submit.adopt(self.target, self.namespace, docs, existing, check=True)

    def state(self, run_id: str) -> Running:
        job = self.target.get(kube.JOB, self.namespace, run_id)
        if job is None or (job.get("metadata") or {}).get("deletionTimestamp"):
            return "unknown"
        conditions = _true_conditions(job)
        if "Complete" in conditions or "SuccessCriteriaMet" in conditions:
            return "succeeded"
        failed = conditions.get("Failed") or conditions.get("FailureTarget")
        if failed is None:
            return "running"  # suspended (Kueue), pending or active
        if failed.get("reason") == "PodFailurePolicy" or self._exited(run_id, CONFIG_ERROR_EXIT):
            return "config-error"
        return "failed"

    def _exited(self, run_id: str, code: int) -> bool:
        """Whether a pod of the run's trainer exited with ``code``."""
        pods, _ = self.target.list_objects(kube.POD, self.namespace, f"{RUN_ID_LABEL}={run_id}")
        for pod in pods:
            for status in (pod.get("status") or {}).get("containerStatuses") or []:
                if not isinstance(status, dict) or status.get("name") != CONTAINER:
                    continue
                for state in (status.get("state"), status.get("lastState")):
                    ended = (state or {}).get("terminated") or {}
                    if ended.get("exitCode") == code:
                        return True
        return False

    def close(self) -> None:
        """Nothing to stop: the trials are Jobs, and go on while the driver restarts."""


def owner_of(target: kube.Cluster, namespace: str, job_name: str) -> dict[str, Any]:
    """The driver's Job as an ownerReference for its trials.

    Raises:
        ClusterError: the Job cannot be read, or is not there (the pod outlived it).
    """
    job = target.get(kube.JOB, namespace, job_name)
    uid = str(((job or {}).get("metadata") or {}).get("uid") or "")
    if not uid:
        raise kube.ClusterError(
            f"the driver's Job {namespace}/{job_name} is gone; its trials would have no owner"
        )
    return submit.owner_reference(job_name, uid)


def _true_conditions(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        str(c.get("type")): c
        for c in (job.get("status") or {}).get("conditions") or []
        if isinstance(c, dict) and c.get("status") == "True"
    }


def _finished(job: dict[str, Any]) -> bool:
    conditions = _true_conditions(job)
    return any(k in conditions for k in ("Complete", "Failed", "SuccessCriteriaMet"))
