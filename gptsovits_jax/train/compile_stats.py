"""Counts of XLA compilations during a run: how many, how long, how many came from the persistent cache.

JAX reports every backend compilation (``/jax/core/compile/backend_compile_duration``,
with the jitted function's name) and every persistent-cache hit through
:mod:`jax.monitoring`; a :class:`CompileStats` listens while it is open. A cache hit is
also a "compilation" in JAX's report (its seconds are the time to load it), so
``compile/count - compile/cache_hits`` is the number of real compilations.
"""

from __future__ import annotations

import threading
from collections import Counter

import jax.monitoring

BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
CACHE_HIT_EVENT = "/jax/compilation_cache/cache_hits"


class CompileStats:
    """A context manager collecting compilations while open (thread-safe).

    ``names`` counts compilations per jitted function name (``gpt_train_step``,
    ``sovits_train_step``, ...) and ``names_from_cache`` those of them loaded from the
    persistent cache, so a run can say how often its train step compiled and whether a
    resumed run loaded it. (JAX reports a cache hit, without a name, inside the
    compilation it then reports with the name; the hit is matched to it per thread.)
    """

    def __init__(self) -> None:
        self.count = 0
        self.seconds = 0.0
        self.cache_hits = 0
        self.names: Counter[str] = Counter()
        self.names_from_cache: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._hit = threading.local()

    def _on_duration(self, event: str, duration: float, **kwargs) -> None:
        if event == BACKEND_COMPILE_EVENT:
            name = str(kwargs.get("fun_name", "?"))
            from_cache = getattr(self._hit, "pending", False)
            self._hit.pending = False
            with self._lock:
                self.count += 1
                self.seconds += float(duration)
                self.names[name] += 1
                self.names_from_cache[name] += int(from_cache)

    def _on_event(self, event: str, **kwargs) -> None:
        del kwargs
        if event == CACHE_HIT_EVENT:
            self._hit.pending = True
            with self._lock:
                self.cache_hits += 1

    def __enter__(self) -> CompileStats:
        jax.monitoring.register_event_duration_secs_listener(self._on_duration)
        jax.monitoring.register_event_listener(self._on_event)
        return self

    def __exit__(self, *exc) -> None:
        jax.monitoring.unregister_event_duration_listener(self._on_duration)
        jax.monitoring.unregister_event_listener(self._on_event)

    def compiles_of(self, name: str, from_cache: bool = False) -> int:
        """Compilations (cache loads included) of the jitted function ``name`` (``jit(name)``); or only its cache loads."""
        with self._lock:
            return (self.names_from_cache if from_cache else self.names)[f"jit({name})"]

    def metrics(self, step_name: str | None = None) -> dict[str, float | int]:
        """So far: ``compile/count``, ``compile/seconds``, ``compile/cache_hits``; with ``step_name`` also
        ``compile/train_step`` and ``compile/train_step_from_cache`` (that function's compilations and cache loads)."""
        with self._lock:
            out: dict[str, float | int] = {
                "compile/count": self.count,
                "compile/seconds": round(self.seconds, 3),
                "compile/cache_hits": self.cache_hits,
            }
        if step_name is not None:
            out["compile/train_step"] = self.compiles_of(step_name)
            out["compile/train_step_from_cache"] = self.compiles_of(step_name, from_cache=True)
        return out
