"""Multi-process training with torch.distributed, launched by torch's elastic agent (torchrun's).

``launch(fn, *args, cfg=...)`` runs ``fn(*args)`` in this process when one process is asked for,
and otherwise starts ``cfg.nproc_per_node`` workers through ``torch.distributed.launcher``, the
API behind the ``torchrun`` command: same environment (RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR...), same c10d rendezvous, so several nodes join with the same ``rdzv_endpoint``.
Inside a worker, ``setup(device)`` joins the process group (gloo on CPU, nccl on GPU) and pins
the worker to its GPU. A function started by a ``torchrun`` command line works the same way.

Data parallelism follows the single-process run exactly: the global batch of step i is the same
set of samples (``DistributedSampler`` over the same seeded permutation, each rank a slice of
batch_size / world_size), gradients are averaged, and BatchNorm is synchronised across ranks, so
2 processes reach the metrics of 1 with the same global batch (tests/test_distributed.py states
the tolerance: per-rank loss normalisation and float reduction order differ).
"""
from __future__ import annotations

import os
import socket
import uuid

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """(world_size, rank) of this process; (1, 0) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def is_main() -> bool:
    return world()[1] == 0


def setup(device: torch.device) -> torch.device:
    """Join the process group when started by torchrun/launch (WORLD_SIZE > 1); returns the device to use."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return device
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:  # share the cores: N ranks x all threads would oversubscribe the CPU
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def mean_across_ranks(value: float) -> float:
    """Mean of a scalar over ranks (the global-batch loss, for logs); the value itself alone."""
    size, _ = world()
    if size == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item()) / size


class CPUSyncBatchNorm(torch.nn.BatchNorm2d):
    """BatchNorm over the global batch for CPU ranks (gloo), which torch.nn.SyncBatchNorm refuses.

    Each rank sums its per-channel count, sum and sum of squares; one differentiable all-reduce
    (torch.distributed.nn) makes them global, so the forward and, through the all-reduce's
    backward, the gradient are those of BatchNorm over the whole batch.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or world()[0] == 1:
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        c = x.shape[1]
        count = torch.full((1,), x.numel() / c, dtype=x.dtype)
        stats = all_reduce(torch.cat([x.sum((0, 2, 3)), (x * x).sum((0, 2, 3)), count]))
        n = stats[-1]
        mean = stats[:c] / n
        var = (stats[c:2 * c] / n - mean * mean).clamp_min(0)
        with torch.no_grad():  # running statistics as nn.BatchNorm2d keeps them (unbiased variance)
            self.num_batches_tracked += 1
            m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
            self.running_mean.mul_(1 - m).add_(m * mean.detach())
            self.running_var.mul_(1 - m).add_(m * var.detach() * n / max(float(n) - 1, 1.0))
        y = (x - mean[None, :, None, None]) * torch.rsqrt(var + self.eps)[None, :, None, None]
        return y * self.weight[None, :, None, None] + self.bias[None, :, None, None] if self.affine else y


def sync_batchnorm(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Every BatchNorm2d of ``model`` synchronised across ranks: torch's SyncBatchNorm on GPUs,
    CPUSyncBatchNorm on CPU. Parameters and buffers keep their names (checkpoints do not change). On
    CPU the parameters are new objects: call it before building the optimizer."""
    if device.type == "cuda":
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for name, child in model.named_children():
        if type(child) is torch.nn.BatchNorm2d:
            sync = CPUSyncBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                    child.track_running_stats)
            sync.load_state_dict(child.state_dict())
            sync.train(child.training)
            for new, old in zip(sync.parameters(), child.parameters()):  # a frozen BatchNorm stays frozen
                new.requires_grad_(old.requires_grad)
            setattr(model, name, sync)
        else:
            sync_batchnorm(child, device)
    return model


def batch_share(total: torch.Tensor) -> torch.Tensor:
    """A loss denominator (a count or weight sum over this rank's batch) made global: the sum over
    ranks divided by the number of ranks. DDP averages the ranks' gradients, so dividing each rank's
    numerator by it gives exactly the gradient of the global-batch mean; itself alone in one process."""
    size, _ = world()
    if size == 1:
        return total
    t = total.detach().clone()
    dist.all_reduce(t)
    return t / size


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(fn, *args, cfg):
    """Run ``fn(*args)`` on ``cfg.nnodes x cfg.nproc_per_node`` processes; returns rank 0's result.

    One process (the default) runs in this process. Otherwise torch's elastic agent starts the
    local workers (start method spawn, so ``fn`` and ``args`` must be picklable) and waits; a
    failing worker fails the launch with its traceback.
    """
    if cfg.nproc_per_node * cfg.nnodes == 1 or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return fn(*args)  # single process, or already a worker of a torchrun command line
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    endpoint = cfg.rdzv_endpoint or f"127.0.0.1:{free_port()}"
    config = LaunchConfig(min_nodes=cfg.nnodes, max_nodes=cfg.nnodes, nproc_per_node=cfg.nproc_per_node,
                          rdzv_backend="c10d", rdzv_endpoint=endpoint, run_id=cfg.rdzv_id or uuid.uuid4().hex[:12],
                          max_restarts=0, monitor_interval=0.5, start_method="spawn")
    results = elastic_launch(config, _worker)(fn, *args)
    return results.get(0)  # only the node holding global rank 0 gets its result


def _worker(fn, *args):
    try:
        return fn(*args)
    finally:
        teardown()


__all__ = ["launch", "free_port", "setup", "teardown", "world", "is_main", "mean_across_ranks", "batch_share",
           "sync_batchnorm", "CPUSyncBatchNorm"]
