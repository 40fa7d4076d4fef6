"""The one launch line of the trainer, shared by the Kubernetes Job and ``kubetune run``.

The trainer always starts under ``accelerate launch`` so that a laptop run and a cluster run
take the same code path. Across nodes, Kubernetes fills ``$(KUBETUNE_MACHINE_RANK)`` (the
pod's completion index) and ``$(KUBETUNE_MAIN_HOST)`` (index 0 behind the headless Service)
from the container's environment.
"""

from __future__ import annotations

#: Where the chart mounts the run's resolved spec.
SPEC_PATH = "/etc/kubetune/spec.yaml"
#: Port of the multi-node rendezvous (the chart's job.rendezvousPort).
RENDEZVOUS_PORT = 29500


def accelerate_command(
    spec_path: str,
    *,
    gpus: int,
    nodes: int = 1,
    machine_rank: str = "$(KUBETUNE_MACHINE_RANK)",
    main_host: str = "$(KUBETUNE_MAIN_HOST)",
    port: int = RENDEZVOUS_PORT,
) -> list[str]:
    """``accelerate launch … -m kubetune.train SPEC`` for ``gpus`` per node on ``nodes``."""
    processes = max(gpus, 1) * nodes
    command = [
        "accelerate", "launch",
        "--num_machines", str(nodes),
        "--num_processes", str(processes),
        "--dynamo_backend", "no",
    ]  # fmt: skip
    if gpus == 0:
        command.append("--cpu")
    elif processes > 1:
        command.append("--multi_gpu")
    if nodes > 1:
        command += [
            "--machine_rank", machine_rank,
            "--main_process_ip", main_host,
            "--main_process_port", str(port),
            "--rdzv_backend", "static",
            "--same_network",
        ]  # fmt: skip
    return [*command, "-m", "kubetune.train", spec_path]
