"""Where metrics go: ``metrics.jsonl``, TensorBoard event files and a line on stdout."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np


def _plain(value: Any) -> float | int:
    value = np.asarray(value)
    if np.issubdtype(value.dtype, np.integer):
        return int(value)
    return float(value)


def format_line(step: int, metrics: Mapping[str, Any], keys: tuple[str, ...] | None = None) -> str:
    """``step 120 | loss/g/total 41.2 | ... | lr/generator 2.0e-04``: losses first, then the rest."""
    names = keys or tuple(sorted(metrics, key=lambda k: (not k.startswith(("loss", "val", "acc")), k)))
    parts = []
    for name in names:
        value = _plain(metrics[name])
        if isinstance(value, int):
            parts.append(f"{name} {value}")
        elif name.startswith("lr/") or (value != 0 and abs(value) < 1e-3):
            parts.append(f"{name} {value:.2e}")
        else:
            parts.append(f"{name} {value:.4g}")
    return f"step {step} | " + " | ".join(parts)


class MetricsWriter:
    """Appends every logged step to ``<workdir>/metrics.jsonl`` and TensorBoard (``<workdir>/tb``).

    Each JSON line is ``{"step": s, "<metric>": value, ...}``; TensorBoard gets the
    same scalars under the same names, plus audio samples.
    """

    def __init__(self, workdir: str | Path, enabled: bool = True):
        self.workdir = Path(workdir)
        self.enabled = enabled
        self._tb = None
        self._jsonl = None
        if enabled:
            from tensorboardX import SummaryWriter

            self.workdir.mkdir(parents=True, exist_ok=True)
            self._jsonl = (self.workdir / "metrics.jsonl").open("a", encoding="utf-8")
            self._tb = SummaryWriter(str(self.workdir / "tb"))

    def scalars(self, step: int, metrics: Mapping[str, Any]) -> dict[str, float | int]:
        """Write one step's metrics; returns them as plain Python numbers."""
        plain = {k: _plain(v) for k, v in metrics.items()}
        if not self.enabled:
            return plain
        record = {"step": int(step)}
        record.update({k: (v if isinstance(v, int) or math.isfinite(v) else str(v)) for k, v in plain.items()})
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        for name, value in plain.items():
            self._tb.add_scalar(name, value, int(step))
        return plain

    def audio(self, step: int, name: str, wave: np.ndarray, sample_rate: int) -> None:
        """A waveform ``[N]`` in [-1, 1] as a TensorBoard audio sample."""
        if self.enabled:
            self._tb.add_audio(name, np.clip(np.asarray(wave, np.float32), -1.0, 1.0), int(step), sample_rate=sample_rate)

    def flush(self) -> None:
        if self.enabled:
            self._tb.flush()

    def close(self) -> None:
        if self.enabled:
            self._tb.close()
            self._jsonl.close()
            self.enabled = False


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file, in order."""
    with Path(path).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
