"""GPU models → the node labels that name them on each kind of cluster.

No one label names a node's GPU everywhere: NVIDIA's GPU feature discovery (GPU Operator)
sets ``nvidia.com/gpu.product``; stock GKE sets ``cloud.google.com/gke-accelerator``;
Karpenter on AWS sets ``karpenter.k8s.aws/instance-gpu-name`` (and
``…/instance-gpu-memory`` in MiB), EKS Auto Mode the same under ``eks.amazonaws.com/``.
``resources.gpu_type: a100-80gb`` therefore becomes a required node affinity with one
nodeSelectorTerm per label (terms are ORed), so the pod lands on a matching node whichever
labeller the cluster runs. A label the table does not know is given exactly instead:
``gpu_type: example.com/gpu=model-x`` becomes a plain ``nodeSelector``.

Sources: NVIDIA gpu-feature-discovery README (product label); GKE "Run GPUs in GKE
Standard node pools" (gke-accelerator values); Karpenter "Scheduling" well-known labels
(instance-gpu-name, instance-gpu-memory); EKS "Create a Node Pool for EKS Auto Mode".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

GFD = "nvidia.com/gpu.product"
GKE = "cloud.google.com/gke-accelerator"
KARPENTER_NAME = "karpenter.k8s.aws/instance-gpu-name"
KARPENTER_MEMORY = "karpenter.k8s.aws/instance-gpu-memory"
AUTO_MODE_NAME = "eks.amazonaws.com/instance-gpu-name"
AUTO_MODE_MEMORY = "eks.amazonaws.com/instance-gpu-memory"


@dataclass(frozen=True)
class Model:
    """One GPU model and the value each labeller gives it (empty: that labeller has none)."""

    products: tuple[str, ...]  # nvidia.com/gpu.product values (one per board variant)
    gke: str = ""
    aws: str = ""  # instance-gpu-name on Karpenter and EKS Auto Mode
    aws_memory_mib: str = ""  # narrows aws where one name covers two memory sizes
    aliases: tuple[str, ...] = field(default=())


#: Known models, by the name a spec uses.
MODELS: dict[str, Model] = {
    "t4": Model(("Tesla-T4",), gke="nvidia-tesla-t4", aws="t4"),
    "v100": Model(
        ("Tesla-V100-SXM2-16GB", "Tesla-V100-SXM2-32GB", "Tesla-V100-PCIE-16GB"),
        gke="nvidia-tesla-v100",
        aws="v100",
    ),
    "a10g": Model(("NVIDIA-A10G",), aws="a10g"),
    "l4": Model(("NVIDIA-L4",), gke="nvidia-l4", aws="l4"),
    "l40s": Model(("NVIDIA-L40S",), aws="l40s"),
    "a100-40gb": Model(
        ("NVIDIA-A100-SXM4-40GB", "NVIDIA-A100-PCIE-40GB"),
        gke="nvidia-tesla-a100",
        aws="a100",
        aws_memory_mib="40960",
        aliases=("a100",),
    ),
    "a100-80gb": Model(
        ("NVIDIA-A100-SXM4-80GB", "NVIDIA-A100-80GB-PCIe"),
        gke="nvidia-a100-80gb",
        aws="a100",
        aws_memory_mib="81920",
    ),
    "h100-80gb": Model(
        ("NVIDIA-H100-80GB-HBM3", "NVIDIA-H100-PCIe"),
        gke="nvidia-h100-80gb",
        aws="h100",
        aliases=("h100",),
    ),
    "h200": Model(("NVIDIA-H200",), gke="nvidia-h200-141gb", aws="h200"),
}


def known() -> str:
    """The known model names, for messages."""
    return ", ".join(MODELS)


def lookup(name: str) -> Model | None:
    """The model a spec's gpu_type names: a table key, an alias, or one of its product
    label values (so ``NVIDIA-L4``, as written for the old product-label selector, still works)."""
    lowered = name.lower()
    for key, model in MODELS.items():
        if lowered == key or lowered in model.aliases:
            return model
        if name in model.products:
            return model
    return None


def exact_label(gpu_type: str) -> tuple[str, str] | None:
    """``label=value`` → (label, value); None for a model name."""
    if "=" not in gpu_type:
        return None
    key, _, value = gpu_type.partition("=")
    return key, value


Expression = dict[str, Any]
Term = dict[str, list[Expression]]


def _expr(key: str, *values: str) -> Expression:
    return {"key": key, "operator": "In", "values": list(values)}


def node_terms(model: Model) -> list[Term]:
    """One nodeSelectorTerm per labeller that names ``model``; any one may match."""
    terms: list[Term] = [{"matchExpressions": [_expr(GFD, *model.products)]}]
    if model.gke:
        terms.append({"matchExpressions": [_expr(GKE, model.gke)]})
    if model.aws:
        for name_key, memory_key in (
            (KARPENTER_NAME, KARPENTER_MEMORY),
            (AUTO_MODE_NAME, AUTO_MODE_MEMORY),
        ):
            expressions = [_expr(name_key, model.aws)]
            if model.aws_memory_mib:
                expressions.append(_expr(memory_key, model.aws_memory_mib))
            terms.append({"matchExpressions": expressions})
    return terms
