"""The training loop shared by both stages: progress, logging, evaluation, checkpoints, resume, signals.

The loop owns no model code: a stage gives it a jitted ``train_step(state, batch)
-> (state, metrics)``, an ``eval_step`` and the names of its main training and
validation losses. Step ``s`` draws ``fold_in(state.rng, s)`` inside the step and the
data iterator's position is checkpointed with the state, so a resumed run
reproduces the uninterrupted one exactly.

The loop never waits for the devices between its *sync points* (log, evaluation and
checkpoint steps): batches are put on the mesh ``prefetch`` steps ahead, each step is
dispatched as soon as the previous one is, and the per-step main losses stay on the
devices until the next sync point, where they are read together and any non-finite
steps since the previous one are reported as a range (with their utterance keys).
``guard_transfers`` makes any device-to-host transfer between sync points an error.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import math
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from tqdm.auto import tqdm

from gptsovits_jax.config import Config
from gptsovits_jax.train.checkpoint import Checkpointer
from gptsovits_jax.train.compile_stats import CompileStats
from gptsovits_jax.train.metrics_log import MetricsWriter, format_line
from gptsovits_jax.train.parallel import global_batch_from_local

log = logging.getLogger(__name__)

KEYS_FIELD = "keys"


class TrainingDivergedError(RuntimeError):
    """Too many consecutive steps had non-finite losses (their updates were skipped)."""


@dataclasses.dataclass(frozen=True)
class StageLoop:
    """What the loop needs to know about a stage.

    Attributes:
      stage: ``"sovits"`` or ``"gpt"`` (checkpoints of the other stage are refused).
      train_cfg: the stage's loop config (``steps``, ``log_every``, ``eval_every``,
        ``checkpoint_every``, ``keep_checkpoints``).
      train_step: jitted ``(state, batch) -> (state, metrics)`` (its key drawn inside from ``state``).
      eval_step: jitted ``(state, batch, rng) -> metrics`` or None.
      main_loss: the metric watched for non-finite values (``loss/g/total``, ``loss/ce``).
      eval_metric: the validation metric that selects the best checkpoint and drives
        reduce-on-plateau (``val/mel``, ``val/ce``).
      sample_audio: optional ``state -> (waveform [N], sample_rate)`` written to TensorBoard at eval.
      max_nonfinite: consecutive non-finite steps tolerated before stopping (checked at sync points;
        their updates are skipped by the optimizer meanwhile).
    """

    stage: str
    train_cfg: Any
    train_step: Callable[..., tuple[Any, dict[str, Any]]]
    eval_step: Callable[..., dict[str, Any]] | None
    main_loss: str
    eval_metric: str
    sample_audio: Callable[[Any], tuple[np.ndarray, int]] | None = None
    max_nonfinite: int = 20


@dataclasses.dataclass
class LoopResult:
    """What a run did: final state, last metrics, last validation metrics, whether it was interrupted."""

    state: Any
    last_metrics: dict[str, float]
    last_eval: dict[str, float]
    interrupted: bool
    resumed_from: int | None
    steps_per_second: float


class _StopRequest:
    """SIGINT/SIGTERM set a flag; the loop saves a checkpoint at the next step boundary and returns.

    With several processes a signal may reach one of them only, or each at another
    step; :meth:`agreed` makes every process stop at the same step, since a process
    that saves or leaves while the others train would leave them waiting forever.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handler(self, signum, frame) -> None:
        del frame
        if self.signum is not None:  # a second signal: stop immediately
            raise KeyboardInterrupt
        self.signum = signum
        log.warning("received %s: saving a checkpoint after this step", signal.Signals(signum).name)

    def __enter__(self) -> _StopRequest:
        with contextlib.suppress(ValueError):  # not in the main thread: no handlers
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def agreed(self) -> int | None:
        """The signal any process has received (the same answer on every process), or None.

        Every process must call this at every step: with several processes it is a
        collective (an all-gather of one integer per process).
        """
        if jax.process_count() == 1:
            return self.signum
        received = multihost_utils.process_allgather(np.int32(self.signum or 0))
        return int(np.max(received)) or None


def split_keys(batch: dict[str, Any]) -> tuple[dict[str, np.ndarray], list[str]]:
    """Separate the host-only utterance keys from the arrays that go to the devices."""
    arrays = {k: v for k, v in batch.items() if k != KEYS_FIELD}
    keys = [str(k) for k in batch.get(KEYS_FIELD, [])]
    return arrays, keys


EVAL_ROWS = "val/rows"


def evaluate(loop: StageLoop, state: Any, eval_batches: Sequence[dict[str, Any]], mesh) -> dict[str, float]:
    """Mean of ``eval_step`` metrics over the evaluation batches, weighted by their real rows.

    Eval steps report ``val/rows``, the number of rows of the global batch marked
    ``valid`` (filler rows are not), which weights the batch; the rng is fixed so that
    successive evaluations are comparable.
    """
    if loop.eval_step is None or not eval_batches:
        return {}
    totals: dict[str, float] = {}
    weight_sum = 0.0
    rng = jax.random.PRNGKey(0)
    for batch in eval_batches:
        arrays, _ = split_keys(batch)
        metrics = jax.device_get(loop.eval_step(state, global_batch_from_local(arrays, mesh), rng))
        weight = float(metrics.pop(EVAL_ROWS))
        for name, value in metrics.items():
            totals[name] = totals.get(name, 0.0) + weight * float(value)
        weight_sum += weight
    return {name: total / max(weight_sum, 1.0) for name, total in totals.items()}


class DeviceBatches:
    """The host batches put on the mesh ``depth`` steps ahead of use.

    ``next()`` returns ``(global batch, utterance keys, data position)`` where the position
    is the host iterator's state just after that batch: the one a checkpoint taken after
    the batch's step must store (the prefetched batches are not consumed yet).
    """

    def __init__(self, host_batches: Iterator[dict[str, Any]], mesh, depth: int = 2):
        self.host_batches = host_batches
        self.mesh = mesh
        self.depth = max(1, depth)
        self.queue: collections.deque = collections.deque()

    def _fill(self) -> None:
        while len(self.queue) < self.depth:
            arrays, keys = split_keys(next(self.host_batches))
            position = self.host_batches.get_state()
            self.queue.append((global_batch_from_local(arrays, self.mesh), keys, position))

    def __iter__(self) -> DeviceBatches:
        return self

    def __next__(self) -> tuple[dict[str, jax.Array], list[str], Any]:
        self._fill()
        item = self.queue.popleft()
        self._fill()  # the next transfers start while this step runs
        return item


def _no_transfers(enabled: bool):
    if not enabled:
        return contextlib.nullcontext()
    stack = contextlib.ExitStack()
    stack.enter_context(jax.transfer_guard_device_to_host("disallow_explicit"))
    stack.enter_context(jax.transfer_guard_host_to_device("disallow"))  # explicit device_put of batches stays allowed
    return stack


def run(
    loop: StageLoop,
    config: Config,
    state: Any,
    train_batches: Iterator[dict[str, Any]],
    eval_batches: Sequence[dict[str, Any]],
    workdir: str | Path,
    mesh,
    *,
    resume: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
    checkpoint_asynchronous: bool = True,
    prefetch: int = 2,
    guard_transfers: bool = False,
    compile_stats: CompileStats | None = None,
) -> LoopResult:
    """Train ``state`` until ``train_cfg.steps`` (or ``stop_after`` more steps), checkpointing on the way.

    Args:
      loop: the stage description.
      config: the run config (stored with checkpoints).
      state: a fresh train state placed on the mesh (replicated); replaced by the
        checkpoint when resuming.
      train_batches: iterator of this process's rows of each global batch (numpy, with
        ``keys``), with ``get_state()``/``set_state()`` for exact resume.
      eval_batches: finite list of evaluation batches (same format).
      workdir: where ``metrics.jsonl``, ``tb/``, ``checkpoints/`` and ``best/`` go.
      mesh: the device mesh (:func:`gptsovits_jax.train.parallel.make_mesh`).
      resume: continue from the newest checkpoint in ``workdir`` if there is one.
      stop_after: stop (with a checkpoint) after this many steps of this call.
      prefetch: batches in flight to the devices ahead of the running step.
      guard_transfers: raise on any device-to-host transfer (and implicit host-to-device
        one) between sync points (tests and debugging).
      compile_stats: an open :class:`CompileStats` whose counts go into ``metrics.jsonl``
        (default: the compilations of this call).
    """
    workdir = Path(workdir)
    with contextlib.nullcontext(compile_stats) if compile_stats is not None else CompileStats() as compiles:
        tc = loop.train_cfg
        is_main = jax.process_index() == 0
        multi_process = jax.process_count() > 1
        step_name = f"{loop.stage}_train_step"
        writer = MetricsWriter(workdir, enabled=is_main)
        checkpointer = Checkpointer(workdir, config, loop.stage, keep=tc.keep_checkpoints, asynchronous=checkpoint_asynchronous)
        resumed_from = None
        if resume and checkpointer.latest_step() is not None:
            state, data_state, resumed_from = checkpointer.restore(state)
            if data_state:  # import-upstream's step-0 checkpoints hold no data position
                train_batches.set_state(data_state)
            log.info("resumed %s from step %d", loop.stage, resumed_from)
            if is_main:
                print(f"resuming {loop.stage} from {workdir / 'checkpoints' / str(resumed_from)}")

        step = int(jax.device_get(state.step))
        end = tc.steps if stop_after is None else min(tc.steps, step + stop_after)
        last_metrics: dict[str, float] = {}
        last_eval: dict[str, float] = {}
        nonfinite_run = 0
        interrupted = False
        started, start_step = time.perf_counter(), step
        data_position = train_batches.get_state()
        window: list[tuple[int, jax.Array, list[str]]] = []  # (step, main loss on the device, keys) since the last sync

        def save(force: bool = False) -> None:
            checkpointer.save(step, state, data_position, force=force)

        def check_window() -> None:
            """Reads the main losses since the last sync point; stops the run after too many non-finite in a row."""
            nonlocal nonfinite_run
            values = [float(v) for v in jax.device_get([loss for _, loss, _ in window])]
            steps = [(s, v, keys) for (s, _, keys), v in zip(window, values)]
            window.clear()

            def report(last: int, keys: list[str]) -> str:
                first = last - nonfinite_run + 1  # the run may have begun before this window
                where = f"step {first}" if first == last else f"steps {first}-{last}"
                log.warning(
                    "%s: %s is not finite (last batch: utterances %s); the updates were skipped (%d in a row)",
                    where,
                    loop.main_loss,
                    keys,
                    nonfinite_run,
                )
                return where

            previous: tuple[int, list[str]] | None = None  # the last step, if non-finite and not reported yet
            for s, value, keys in steps:
                if math.isfinite(value):
                    if previous is not None:
                        report(*previous)
                    previous, nonfinite_run = None, 0
                    continue
                nonfinite_run += 1
                previous = (s, keys)
                if nonfinite_run >= loop.max_nonfinite:
                    where = report(s, keys)
                    save(force=True)
                    raise TrainingDivergedError(
                        f"{nonfinite_run} consecutive steps with non-finite {loop.main_loss} ({where}; last batch: {keys}); "
                        f"the parameters of the last good step are saved at step {step} in {workdir / 'checkpoints'}"
                    )
            if previous is not None:
                report(*previous)

        bar = tqdm(
            total=tc.steps, initial=step, desc=f"train {loop.stage}", unit="step", disable=not (progress and is_main), dynamic_ncols=True
        )
        device_batches = DeviceBatches(train_batches, mesh, prefetch)
        try:
            with _StopRequest() as stop:
                while step < end:
                    upcoming = step + 1
                    log_now = upcoming % tc.log_every == 0 or upcoming == end
                    eval_now = loop.eval_step is not None and (upcoming % tc.eval_every == 0 or upcoming == tc.steps)
                    save_now = upcoming % tc.checkpoint_every == 0 or upcoming == end
                    sync = log_now or eval_now or save_now
                    with _no_transfers(guard_transfers and not sync):
                        batch, keys, position = next(device_batches)
                        state, metrics = loop.train_step(state, batch)
                        step, data_position = upcoming, position
                        window.append((step, metrics[loop.main_loss], keys))
                        bar.update(1)
                        # Every process must ask at the same steps (a collective with several processes).
                        signum = stop.agreed() if (sync or not multi_process) else None
                    if sync or signum is not None:
                        check_window()
                    if log_now:
                        last_metrics = writer.scalars(step, {**jax.device_get(metrics), **compiles.metrics(step_name)})
                        if is_main:
                            bar.write(format_line(step, last_metrics))
                        bar.set_postfix({loop.main_loss: f"{last_metrics[loop.main_loss]:.4g}"})
                    if eval_now:
                        last_eval = evaluate(loop, state, eval_batches, mesh)
                        if last_eval:
                            writer.scalars(step, last_eval)
                            if is_main:
                                bar.write(format_line(step, last_eval))
                            value = last_eval[loop.eval_metric]
                            state = state.replace(
                                validation_loss=jax.device_put(np.float32(value), state.step.sharding),
                                validation_round=state.validation_round + 1,
                            )
                            checkpointer.save_if_best(step, state, data_position, value)
                            if loop.sample_audio is not None and is_main:
                                wave, sample_rate = loop.sample_audio(state)
                                writer.audio(step, f"{loop.stage}/sample", wave, sample_rate)
                    if save_now:
                        save()
                    if signum is not None:
                        interrupted = True
                        save(force=True)
                        if is_main:
                            bar.write(f"stopped by {signal.Signals(signum).name} at step {step}; checkpoint saved, resume with --resume")
                        break
        except KeyboardInterrupt:
            interrupted = True
            # A second signal stops at once, wherever this process is: the other processes
            # are not at a step boundary and could not join a save.
            if jax.process_count() == 1:
                save(force=True)
            raise
        finally:
            bar.close()
            checkpointer.close()
            writer.close()
        elapsed = time.perf_counter() - started
        rate = (step - start_step) / elapsed if elapsed > 0 else 0.0
        return LoopResult(
            state=state,
            last_metrics=last_metrics,
            last_eval=last_eval,
            interrupted=interrupted,
            resumed_from=resumed_from,
            steps_per_second=rate,
        )
