"""Data parallelism: a 1-D device mesh, replicated state, batches split along the ``data`` axis.

The train steps are written for the global batch and compiled once with
``jax.jit`` and shardings: parameters and optimizer state replicated, every batch
array split on its leading axis across the mesh's ``data`` axis. XLA inserts the
gradient all-reduce (the ``lax.pmean`` of the pmap model) and the cross-device sums
of batch statistics (quantizer EMA, k-means). Nothing in a step knows how many
devices there are, and random numbers do not depend on the partitioning (JAX's
partitionable threefry), so one device and eight give the same result up to the
order of floating-point reductions. The state is created with its sharding
(:func:`gptsovits_jax.train.common.jit_init`): every device computes its own part,
and the parameters drawn are the same whatever the mesh.

Multi-host: :func:`initialize_distributed` calls ``jax.distributed.initialize``;
each process loads its own rows of every global batch and
:func:`global_batch_from_local` assembles them into one global array.
"""

from __future__ import annotations

import logging
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

log = logging.getLogger(__name__)

_distributed_initialized = False


def initialize_distributed(parallel_cfg: Any) -> None:
    """Join a multi-process run when ``parallel.distributed`` is set (once per process, before any JAX work).

    ``coordinator_address`` is ``host:port`` of process 0; ``num_processes`` and
    ``process_id`` may be left ``None`` where the cluster environment provides them
    (SLURM, TPU pods, ...).
    """
    global _distributed_initialized
    if not parallel_cfg.distributed or _distributed_initialized:
        return
    # CPU hosts need a collectives backend for cross-process all-reduces; accelerators ignore this.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=parallel_cfg.coordinator_address,
        num_processes=parallel_cfg.num_processes,
        process_id=parallel_cfg.process_id,
    )
    _distributed_initialized = True
    log.info(
        "process %d of %d, %d local / %d global devices",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )


def make_mesh(num_devices: int | None = None, axis: str = "data") -> Mesh:
    """A 1-D mesh over the first ``num_devices`` devices (all devices when ``None``)."""
    devices = jax.devices()
    if num_devices is not None:
        if num_devices > len(devices):
            raise ValueError(f"parallel.num_devices={num_devices} but only {len(devices)} devices are visible: {devices}")
        devices = devices[:num_devices]
    return Mesh(np.asarray(devices), (axis,))


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array (parameters, optimizer state)."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    """The leading (batch) axis is split across the mesh's devices."""
    return NamedSharding(mesh, PartitionSpec(mesh.axis_names[0]))


def check_batch_size(global_batch_size: int, mesh: Mesh) -> None:
    """The global batch must split evenly over devices and processes."""
    n = mesh.devices.size
    if global_batch_size % n:
        raise ValueError(f"batch size {global_batch_size} is not divisible by the {n} devices of the mesh")
    if global_batch_size % jax.process_count():
        raise ValueError(f"batch size {global_batch_size} is not divisible by the {jax.process_count()} processes")


def process_rows(global_batch_size: int) -> slice:
    """The rows of each global batch this process loads."""
    per_process = global_batch_size // jax.process_count()
    start = jax.process_index() * per_process
    return slice(start, start + per_process)


def global_batch_from_local(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Assemble this process's rows into global arrays sharded along the batch axis."""
    sharding = batch_sharded(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local_batch.items()}
