"""Both training stages assembled: distributed setup, state on the mesh, compiled steps, data, loop."""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from gptsovits_jax.config import Config
from gptsovits_jax.train import loop as loop_lib
from gptsovits_jax.train.compile_stats import CompileStats
from gptsovits_jax.train.gpt_step import create_gpt_state, gpt_eval_step, jit_gpt_train_step
from gptsovits_jax.train.parallel import batch_sharded, check_batch_size, initialize_distributed, make_mesh, replicated
from gptsovits_jax.train.sovits_step import create_sovits_state, jit_sovits_train_step, resynthesize, sovits_eval_step
from gptsovits_jax.train.synthetic import RepeatingBatches, synthetic_gpt_batch, synthetic_sovits_batch
from gptsovits_jax.upstream_io import starting_variables

log = logging.getLogger(__name__)

STAGES = ("sovits", "gpt")


def _local_copy(x: jax.Array) -> jax.Array:
    """This process's copy of a replicated array, on one of its devices."""
    if not x.sharding.is_fully_replicated:
        raise ValueError(f"expected a replicated array, got sharding {x.sharding}")
    return x.addressable_data(0)


def sovits_sample_audio(setup, batch: dict[str, np.ndarray]):
    """``state -> (waveform, sample_rate)``: the first utterance of ``batch`` resynthesised at full length.

    Runs on one device from this process's copy of the (replicated) parameters: a
    computation over the global arrays would need every process to take part, and
    only process 0 writes audio.
    """
    first = {k: v[:1] for k, v in batch.items() if k in ("ssl", "spec", "spec_lens", "text", "text_lens")}
    synthesize = jax.jit(lambda params_g, quantizer: resynthesize(setup.synth, params_g, quantizer, first))

    def sample(state):
        params_g, quantizer = jax.tree.map(_local_copy, (state.params_g, state.quantizer))
        wave = np.asarray(synthesize(params_g, quantizer))[0]
        valid = int(first["spec_lens"][0]) * setup.config.audio.hop_length
        return wave[:valid], setup.config.audio.sample_rate

    return sample


def build_stage(
    stage: str, config: Config, mesh, eval_batches: Sequence[dict[str, Any]] = (), variables: dict[str, Any] | None = None
) -> tuple[loop_lib.StageLoop, Any]:
    """The loop description and a fresh state of ``stage``, created with its sharding on ``mesh`` (replicated).

    ``variables``: the parameters (and codebook) to start from, as :func:`gptsovits_jax.upstream_io.starting_variables`
    returns them; None initialises them fresh. The optimizer state is fresh either way, and the state
    is computed on the mesh's devices with the sharding the train step takes it in (nothing is built
    on one device and copied).
    """
    state_sharding = replicated(mesh)
    if variables is not None:  # starting weights go in as arguments (placed as the state will hold them), not as constants
        variables = jax.device_put(variables, state_sharding)
    if stage == "sovits":
        start = None if variables is None else (variables["params_g"], variables["quantizer"], variables["params_d"])
        state, setup = create_sovits_state(config, variables=start, sharding=state_sharding)
        loop = loop_lib.StageLoop(
            stage="sovits",
            train_cfg=config.sovits_train,
            train_step=jit_sovits_train_step(setup, state_sharding, batch_sharded(mesh), rng_from_state=True),
            eval_step=jax.jit(functools.partial(sovits_eval_step, setup)),
            main_loss="loss/g/total",
            eval_metric="val/mel",
            sample_audio=sovits_sample_audio(setup, eval_batches[0]) if eval_batches else None,
            max_nonfinite=config.sovits_train.max_nonfinite_steps,
        )
    elif stage == "gpt":
        state, setup = create_gpt_state(config, params=None if variables is None else variables["params"], sharding=state_sharding)
        loop = loop_lib.StageLoop(
            stage="gpt",
            train_cfg=config.gpt_train,
            train_step=jit_gpt_train_step(setup, state_sharding, batch_sharded(mesh), rng_from_state=True),
            eval_step=jax.jit(lambda s, b, rng: gpt_eval_step(setup, s, b)),
            main_loss="loss/ce",
            eval_metric="val/ce",
            max_nonfinite=config.gpt_train.max_nonfinite_steps,
        )
    else:
        raise ValueError(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}")
    return loop, state


def train_stage(
    stage: str,
    config: Config,
    workdir: str | Path,
    train_batches: Iterator[dict[str, Any]],
    eval_batches: Sequence[dict[str, Any]],
    *,
    resume: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
    require_v2: bool = True,
    guard_transfers: bool = False,
) -> loop_lib.LoopResult:
    """Train ``stage`` on the given batches into ``workdir`` (on all devices of ``parallel``).

    The run starts from ``{stage}_train.init_from`` when set (``require_v2``: the config must have
    upstream v2's sizes to read an upstream file), unless ``resume`` finds a checkpoint in ``workdir``.
    Compilations from here on (state initialisation included) are counted in ``metrics.jsonl``.
    """
    train_cfg = config.sovits_train if stage == "sovits" else config.gpt_train
    mesh = make_mesh(config.parallel.num_devices, config.parallel.data_axis)
    check_batch_size(train_cfg.batch_size, mesh)
    with CompileStats() as compiles:
        variables = starting_variables(stage, config, workdir, resume=resume, require_v2=require_v2)
        loop, state = build_stage(stage, config, mesh, eval_batches, variables)
        return loop_lib.run(
            loop,
            config,
            state,
            train_batches,
            eval_batches,
            workdir,
            mesh,
            resume=resume,
            progress=progress,
            stop_after=stop_after,
            guard_transfers=guard_transfers,
            compile_stats=compiles,
        )


def data_sources(stage: str, config: Config, *, synthetic: bool = False, semantic_path: str | Path | None = None):
    """``(train iterator, eval batches)`` of ``stage`` for this process.

    From the preprocessed cache ``data.cache_dir`` (and, for GPT, its semantic tokens), or
    with ``synthetic`` a fixed learnable batch (harmonic tones / phoneme-derived tokens) for
    smoke runs without a corpus.
    """
    from gptsovits_jax.train.parallel import process_rows

    if synthetic:
        if stage == "sovits":
            batch_size = config.sovits_train.batch_size
            frames = 2 * config.sovits.segment_frames + 8
            train = [synthetic_sovits_batch(config, batch_size, frames, 24, seed=0)]
            evals = [synthetic_sovits_batch(config, batch_size, frames, 24, seed=1)]
        else:
            batch_size = config.gpt_train.batch_size
            train = [synthetic_gpt_batch(config, batch_size, 32, 64, seed=0)]
            evals = [synthetic_gpt_batch(config, batch_size, 32, 64, seed=1)]
        rows = process_rows(batch_size)
        return RepeatingBatches(train, rows), [{k: v[rows] for k, v in b.items()} for b in evals]

    from gptsovits_jax.data import pipeline

    shard = {"process_index": jax.process_index(), "process_count": jax.process_count()}
    if stage == "sovits":
        return pipeline.sovits_train_iterator(config, **shard), pipeline.sovits_eval_batches(config, **shard)
    return (
        pipeline.gpt_train_iterator(config, semantic_path=semantic_path, **shard),
        pipeline.gpt_eval_batches(config, semantic_path=semantic_path, **shard),
    )


def run_training(
    stage: str,
    config: Config,
    workdir: str | Path,
    *,
    resume: bool = False,
    synthetic: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
    require_v2: bool = True,
) -> loop_lib.LoopResult:
    """What ``gptsovits-jax train-sovits`` / ``train-gpt`` do: join the cluster, load data, train."""
    initialize_distributed(config.parallel)
    train_batches, eval_batches = data_sources(stage, config, synthetic=synthetic)
    try:
        return train_stage(
            stage,
            config,
            workdir,
            train_batches,
            eval_batches,
            resume=resume,
            progress=progress,
            stop_after=stop_after,
            require_v2=require_v2,
        )
    finally:
        close = getattr(train_batches, "close", None)
        if close is not None:
            close()
