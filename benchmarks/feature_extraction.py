"""Front-end feature extraction speed: HuBERT-base (seconds of audio per second) and BERT-large (characters per second).

    PYTHONPATH=. .venv/bin/python benchmarks/feature_extraction.py            # the project's Flax models
    /work/torchenv/bin/python benchmarks/feature_extraction.py                 # transformers' PyTorch models
    # options: [--backend auto|flax|torch] [--audio-seconds 4] [--chars 100] [--repeats 5]
    #          [--out benchmarks/results/feature_extraction_cpu.jsonl] [--hubert-config F] [--bert-config F]

One script, two halves: with ``--backend auto`` it measures the Flax models when ``gptsovits_jax`` (and
so JAX) imports, else transformers' ``HubertModel`` and ``BertForMaskedLM`` when ``torch`` imports. Run
it alternately under both Pythons on the same machine to compare. Both halves build the models at
the real configs (``tests/fixtures/hf/chinese-hubert-base.config.json`` and
``chinese-roberta-wwm-ext-large.config.json``) with random weights (the speed does not depend on the
values) and time what upstream runs:

* HuBERT: ``last_hidden_state`` of one utterance of ``--audio-seconds`` at 16 kHz;
* BERT: ``hidden_states[-3]`` of one text of ``--chars`` characters (``chars + 2`` tokens with CLS/SEP).
  Upstream (and the torch half) runs the whole ``BertForMaskedLM`` with ``output_hidden_states`` (all 24
  layers and the MLM head); the Flax half runs the 22 layers ``hidden_states[-3]`` depends on.

float32, batch 1, default thread settings. The first call (compilation for JAX) is reported apart; the
rate is from the median of ``--repeats`` timed calls. Prints one JSON object and appends it to ``--out``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HF = REPO / "tests" / "fixtures" / "hf"
HUBERT_CONFIG = HF / "chinese-hubert-base.config.json"
BERT_CONFIG = HF / "chinese-roberta-wwm-ext-large.config.json"
DEFAULT_OUT = REPO / "benchmarks" / "results" / "feature_extraction_cpu.jsonl"
SEED = 0


def _timed(fn, repeats: int) -> tuple[float, float]:
    """``(first call seconds, median of repeats seconds)`` of ``fn()``."""
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return first, statistics.median(times)


def _ids(chars: int, vocab_size: int):
    """``[CLS] + chars random character ids + [SEP]``, int32."""
    import numpy as np

    rng = np.random.default_rng(SEED)
    # chinese-roberta-wwm-ext-large: [CLS] = 101, [SEP] = 102, CJK characters above 670. The tiny test vocabulary: 2, 3, then 5 on.
    cls, sep, low = (101, 102, 670) if vocab_size > 1000 else (2, 3, 5)
    return np.concatenate([[cls], rng.integers(low, vocab_size, chars), [sep]]).astype(np.int32)


def _wave(seconds: float):
    import numpy as np

    return (300.0 * np.random.default_rng(SEED).standard_normal(int(seconds * 16000))).astype(np.float32)


def _random_params(abstract):
    """numpy normal(0, 0.02) float32 arrays for an abstract parameter tree (a jitted init of 300M parameters compiles slowly)."""
    import jax
    import numpy as np

    rng = np.random.default_rng(SEED)
    return jax.tree.map(lambda leaf: jax.device_put(0.02 * rng.standard_normal(leaf.shape, dtype=np.float32)), abstract)


def _flax_hubert(audio_seconds: float, repeats: int, config_path: Path) -> tuple[float, float]:
    import jax
    import jax.numpy as jnp

    from gptsovits_jax.models import hubert

    config = hubert.read_config_file(config_path)
    wave = jnp.asarray(_wave(audio_seconds))[None]
    module = hubert.Hubert(config)
    params = _random_params(hubert.abstract_params(config))
    apply = jax.jit(lambda p, w: module.apply({"params": p}, w))
    return _timed(lambda: apply(params, wave).block_until_ready(), repeats)


def _flax_bert(chars: int, repeats: int, config_path: Path) -> tuple[float, float]:
    import jax
    import jax.numpy as jnp

    from gptsovits_jax.models import bert

    config = bert.read_config_file(config_path)
    ids = jnp.asarray(_ids(chars, config.vocab_size))[None]
    module = bert.Bert(config, bert.FEATURE_LAYER)
    params = _random_params(bert.abstract_params(config, bert.FEATURE_LAYER))
    apply = jax.jit(lambda p, i: module.apply({"params": p}, i))
    return _timed(lambda: apply(params, ids).block_until_ready(), repeats)


def flax_half(audio_seconds: float, chars: int, repeats: int, hubert_config: Path, bert_config: Path) -> dict:
    import flax
    import jax

    hubert_first, hubert_median = _flax_hubert(audio_seconds, repeats, hubert_config)
    bert_first, bert_median = _flax_bert(chars, repeats, bert_config)
    return {
        "backend": "flax",
        "versions": {"jax": jax.__version__, "flax": flax.__version__},
        "device": str(jax.devices()[0]),
        "hubert": _record(hubert_config, "audio_seconds", audio_seconds, hubert_first, hubert_median, "first call includes compilation"),
        "bert": _record(
            bert_config, "chars", chars, bert_first, bert_median, "hidden_states[-3]: all layers but the last two; first call compiles"
        ),
    }


def _config_of(cls, path: Path):
    raw = json.loads(path.read_text())
    return cls(**{k: v for k, v in raw.items() if not k.startswith("_") and k not in ("architectures", "torch_dtype")})


def _torch_hubert(audio_seconds: float, repeats: int, config_path: Path) -> tuple[float, float]:
    import torch
    from transformers import HubertConfig, HubertModel

    torch.manual_seed(SEED)
    model = HubertModel(_config_of(HubertConfig, config_path)).eval()
    wave = torch.from_numpy(_wave(audio_seconds))[None]
    with torch.no_grad():
        return _timed(lambda: model(wave).last_hidden_state, repeats)


def _torch_bert(chars: int, repeats: int, config_path: Path) -> tuple[float, float]:
    import torch
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(SEED)
    config = _config_of(BertConfig, config_path)
    model = BertForMaskedLM(config).eval()
    ids = torch.from_numpy(_ids(chars, config.vocab_size)).long()[None]
    with torch.no_grad():
        return _timed(lambda: model(input_ids=ids, output_hidden_states=True)["hidden_states"][-3], repeats)


def torch_half(audio_seconds: float, chars: int, repeats: int, hubert_config: Path, bert_config: Path) -> dict:
    import torch
    import transformers

    hubert_first, hubert_median = _torch_hubert(audio_seconds, repeats, hubert_config)
    bert_first, bert_median = _torch_bert(chars, repeats, bert_config)
    return {
        "backend": "torch",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "device": "cpu",
        "torch_threads": torch.get_num_threads(),
        "hubert": _record(
            hubert_config, "audio_seconds", audio_seconds, hubert_first, hubert_median, "transformers HubertModel, as upstream"
        ),
        "bert": _record(
            bert_config, "chars", chars, bert_first, bert_median, "transformers BertForMaskedLM, output_hidden_states, as upstream"
        ),
    }


def _record(config: Path, unit: str, amount: float, first: float, median: float, note: str) -> dict:
    """One model's timings: ``<unit>_per_s`` = ``amount / median``."""
    return {
        "config": config.name if config.parent == HF else str(config),
        unit: amount,
        "first_call_s": first,
        "median_s": median,
        f"{unit}_per_s": amount / median,
        "note": note,
    }


def _choose(backend: str) -> str:
    if backend != "auto":
        return backend
    try:
        import gptsovits_jax  # noqa: F401

        return "flax"
    except ImportError:
        return "torch"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("auto", "flax", "torch"), default="auto")
    parser.add_argument("--audio-seconds", type=float, default=4.0)
    parser.add_argument("--chars", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--hubert-config", type=Path, default=HUBERT_CONFIG, help="a HuBERT config.json (default: chinese-hubert-base)")
    parser.add_argument("--bert-config", type=Path, default=BERT_CONFIG, help="a BERT config.json (default: chinese-roberta-wwm-ext-large)")
    args = parser.parse_args(argv)
    backend = _choose(args.backend)
    load_start = os.getloadavg()
    half = flax_half if backend == "flax" else torch_half
    record = {
        "benchmark": "feature_extraction",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {"cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine(), "load_avg_start": load_start},
        "python": sys.version.split()[0],
        "repeats": args.repeats,
        **half(args.audio_seconds, args.chars, args.repeats, args.hubert_config, args.bert_config),
    }
    record["machine"]["load_avg_end"] = os.getloadavg()
    line = json.dumps(record)
    print(line)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "a") as f:
            f.write(line + "\n")
    return record


if __name__ == "__main__":
    main()
