"""Host memory per node, estimated and checked before a job is queued.

The job kind estimates what one rank holds (``hpccl.core.kinds``: ``host_memory``); a node
holds that times its ranks. More than the node's memory (``memory_per_node_gb`` in the site
file) is refused, since such a job would be killed by the kernel or the scheduler after
waiting in the queue; more than ``WARN_SHARE`` of it is submitted with a warning.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from hpccl.core.errors import ConfigError
from hpccl.core.memory import GB, HostMemoryEstimate, node_memory_bytes

WARN_SHARE = 0.8


@dataclass
class NodeMemory:
    estimate: HostMemoryEstimate
    ranks_per_node: int
    node_bytes: Optional[float]      # None: the site does not say
    source: str                      # where node_bytes comes from

    @property
    def need(self) -> float:
        return self.estimate.per_node(self.ranks_per_node)

    def line(self) -> str:
        of = f" of {self.node_bytes / GB:.0f} GB ({self.source})" if self.node_bytes else \
            " (the site gives no memory_per_node_gb to check it against)"
        notes = "".join(f"; {n}" for n in self.estimate.notes)
        return (f"host memory per node: about {self.need / GB:.2f} GB{of}: {self.ranks_per_node} "
                f"rank(s) x {self.estimate.per_rank / GB:.2f} GB ({self.estimate.describe()}{notes})")

    def warning(self) -> Optional[str]:
        if self.node_bytes and self.need > WARN_SHARE * self.node_bytes:
            return (f"the job would use {self.need / self.node_bytes:.0%} of each node's host memory; "
                    "the rest is for the system, MPI buffers and the file system cache")
        return None


def on_gpu(site, cfg) -> bool:
    if cfg.runtime.device != "auto":
        return cfg.runtime.device == "cuda"
    if site.gpus is not None:
        return site.gpus
    import torch                   # a site without a scheduler runs on this machine
    return torch.cuda.is_available()


def check_node_memory(site, cfg, layout) -> Optional[NodeMemory]:
    """The estimate for ``layout`` on ``site``; raises when it exceeds a node's memory."""
    from hpccl.core import kinds
    estimate = kinds.of_job(cfg).estimate_host_memory(cfg, layout.gpus, on_gpu(site, cfg))
    if estimate is None:
        return None
    if site.memory_per_node_gb is not None:
        node, source = site.memory_per_node_gb * GB, f"memory_per_node_gb of site '{site.name}'"
    elif site.scheduler == "none":
        node, source = node_memory_bytes(), "this machine"
    else:
        node, source = None, ""
    memory = NodeMemory(estimate, layout.ranks_per_node, node, source)
    if node and memory.need > node:
        raise ConfigError(
            f"job '{cfg.name}' on {layout.gpus} GPU(s) of {site.label} would hold about "
            f"{memory.need / GB:.1f} GB of host memory per node, more than its {node / GB:.0f} GB "
            f"({source}): {layout.ranks_per_node} rank(s) x {estimate.per_rank / GB:.2f} GB "
            f"({estimate.describe()}). Nothing was written or submitted. HINT: more GPUs (each "
            "rank's share of the data shrinks), a smaller rehearsal buffer (rehearsal.buffer_ratio "
            "or rehearsal.slots_per_class), or, if the site file understates the nodes, "
            "memory_per_node_gb in ~/.config/hpccl/sites/.")
    return memory
