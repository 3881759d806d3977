"""Write the ``tests/fixtures/hf/`` fixtures with torch and transformers: tiny HuBERT and BERT directories and their outputs.

Run by hand in a separate Python with torch (never by CI or users; the package and its tests never
import torch):

    /work/torchenv/bin/pip install transformers safetensors tokenizers
    /work/torchenv/bin/python tools/make_hf_fixtures.py            # both
    /work/torchenv/bin/python tools/make_hf_fixtures.py hubert     # or one of them
    /work/torchenv/bin/python tools/make_hf_fixtures.py bert

HuBERT:

It builds a transformers ``HubertModel`` at tiny sizes, with chinese-hubert-base's conv kernels and
strides, an even positional-convolution width and every parameter drawn from a seeded generator
(norm scales around 1, not transformers' init of ones and zeros, so every tensor matters), and saves it
as two Hugging Face directories:

* ``tiny-hubert-safetensors/``: ``config.json`` and ``model.safetensors`` from ``save_pretrained``;
* ``tiny-hubert-bin/``: ``config.json`` and ``pytorch_model.bin`` from ``torch.save`` of the state dict,
  with the positional convolution's weight norm spelled ``weight_g``/``weight_v`` as in the real
  chinese-hubert-base file (older PyTorch), while the safetensors file keeps whatever spelling this
  transformers writes.

``tiny_hubert.npz`` holds float32 16 kHz inputs of several lengths (``wave_<N>``) and the model's
``last_hidden_state`` for each one run alone (``hidden_<N>``, ``[T, hidden]``), the way upstream runs it.

``chinese-hubert-base.manifest.json`` records, for ``tests/fixtures/hf/chinese-hubert-base.config.json``
(the real config), every state-dict key and shape of ``HubertModel`` built by transformers at that
config and its parameter count, as counted by torch.

BERT (upstream's text features come from ``BertForMaskedLM`` of chinese-roberta-wwm-ext-large):

* ``tiny-bert-safetensors/``: ``config.json``, ``model.safetensors`` (``save_pretrained``) and
  ``tokenizer.json`` (``BertTokenizerFast.save_pretrained``): the three files of upstream's
  ``pretrained_models/chinese-roberta-wwm-ext-large`` layout;
* ``tiny-bert-bin/``: ``config.json``, ``vocab.txt`` and ``pytorch_model.bin`` (``torch.save`` of the
  state dict plus the ``bert.embeddings.position_ids`` buffer that transformers 4.30, which wrote
  upstream's file, still saved): the layout of hfl's original directory;
* ``tiny_bert.npz``: for each text, the token ids transformers' tokenizer gives for each directory
  (``ids_<i>``) and ``hidden_states[-3]`` of the text run alone (``hidden_<i>``, ``[tokens, hidden]``,
  CLS and SEP rows included), and the same texts as one right-padded batch with its attention mask
  (``batch_ids``, ``batch_mask``, ``batch_hidden``);
* ``tiny_bert.json``: seed, texts, versions, key lists;
* ``chinese-roberta-wwm-ext-large.manifest.json``: every state-dict key and shape of ``BertForMaskedLM``
  built (meta device) at ``chinese-roberta-wwm-ext-large.config.json``, the real config.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast, HubertConfig, HubertModel

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "hf"
SEED = 20260801
LENGTHS = (16000, 16321, 7999, 400, 719)
TINY = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 64,
    "conv_dim": [16] * 7,
    "conv_kernel": [10, 3, 3, 3, 3, 2, 2],
    "conv_stride": [5, 2, 2, 2, 2, 2, 2],
    "conv_bias": False,
    "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 4,
    "feat_extract_norm": "group",
    "feat_extract_activation": "gelu",
    "hidden_act": "gelu",
    "do_stable_layer_norm": False,
    "feat_proj_layer_norm": True,
    "layer_norm_eps": 1e-5,
    "mask_time_prob": 0.05,
}


def randomise(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Every parameter from ``generator``: matrices ``N(0, 1 / fan_in)``, norm scales and weight-norm gains ``1 + N(0, 0.2)``, biases ``N(0, 0.2)``."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if name.endswith("bias"):
                param.copy_(0.2 * noise)
            elif "layer_norm" in name or name.endswith(("original0", "weight_g")) or param.ndim == 1:
                param.copy_(1.0 + 0.2 * noise)
            else:
                fan_in = math.prod(param.shape[1:])
                param.copy_(noise / math.sqrt(fan_in))


def make_inputs(generator: torch.Generator) -> dict[str, np.ndarray]:
    """Noise under a slow envelope at upstream's HuBERT input level (its 1145.14 loudness mix peaks near 500)."""
    waves = {}
    for n in LENGTHS:
        t = torch.arange(n, dtype=torch.float64) / 16000.0
        envelope = 0.6 + 0.4 * torch.sin(2 * math.pi * 3.0 * t)
        carrier = torch.sin(2 * math.pi * 220.0 * t) + 0.5 * torch.randn(n, generator=generator, dtype=torch.float64)
        waves[f"wave_{n}"] = (300.0 * envelope * carrier).numpy().astype(np.float32)
    return waves


def write_config(directory: Path, config: HubertConfig) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    config.to_json_file(directory / "config.json")


def tiny_fixtures() -> None:
    generator = torch.Generator().manual_seed(SEED)
    config = HubertConfig(**TINY)
    model = HubertModel(config).eval()
    randomise(model, generator)

    safetensors_dir = OUT / "tiny-hubert-safetensors"
    bin_dir = OUT / "tiny-hubert-bin"
    for directory in (safetensors_dir, bin_dir):
        shutil.rmtree(directory, ignore_errors=True)
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        safetensors_dir.mkdir(parents=True)
        for name in ("config.json", "model.safetensors"):
            shutil.copy(Path(tmp) / name, safetensors_dir / name)

    classic = {}
    for key, value in model.state_dict().items():
        key = key.replace("parametrizations.weight.original0", "weight_g").replace("parametrizations.weight.original1", "weight_v")
        classic[key] = value.detach().clone().contiguous()
    write_config(bin_dir, config)
    torch.save(classic, bin_dir / "pytorch_model.bin")

    arrays = make_inputs(generator)
    with torch.no_grad():
        for n in LENGTHS:
            hidden = model(torch.from_numpy(arrays[f"wave_{n}"])[None]).last_hidden_state[0]
            arrays[f"hidden_{n}"] = hidden.numpy().astype(np.float32)
    np.savez(OUT / "tiny_hubert.npz", **arrays)

    # Reload both directories with transformers itself: the files say what the model computed.
    for directory in (safetensors_dir, bin_dir):
        reloaded = HubertModel.from_pretrained(directory).eval()
        with torch.no_grad():
            again = reloaded(torch.from_numpy(arrays["wave_16321"])[None]).last_hidden_state[0].numpy()
        assert np.array_equal(again, arrays["hidden_16321"]), directory
    info = {
        "seed": SEED,
        "lengths": list(LENGTHS),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "bin_keys": sorted(classic),
        "safetensors_keys": sorted(model.state_dict()),
    }
    (OUT / "tiny_hubert.json").write_text(json.dumps(info, indent=1) + "\n")
    print("tiny frames:", {n: arrays[f"hidden_{n}"].shape for n in LENGTHS})


def full_size_manifest() -> None:
    raw = json.loads((OUT / "chinese-hubert-base.config.json").read_text())
    config = HubertConfig(**{k: v for k, v in raw.items() if not k.startswith("_") and k not in ("architectures", "torch_dtype")})
    with torch.device("meta"):
        model = HubertModel(config)
    state = model.state_dict()
    manifest = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "shapes": {key: list(value.shape) for key, value in state.items()},
    }
    (OUT / "chinese-hubert-base.manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print("chinese-hubert-base parameters (torch):", manifest["parameters"])


# --------------------------------------------------------------------------- BERT

BERT_SEED = 20261203
BERT_TEXTS = (
    "你好,天气很好.",
    "我们今天去公园散步吧!",
    "他说,这是一个测试?",
    "一二三四五六七",
    "好…",
    "龘好.",
)
"""Normalised Chinese as the project's frontend writes it (ASCII punctuation); odd and even lengths;
``龘`` is not in the tiny vocabulary, so it becomes ``[UNK]``, one token, as in upstream."""
BERT_EXTRA_CHARS = "零二四年说话声音中文字朋友"
BERT_TINY = {
    "hidden_size": 16,
    "num_hidden_layers": 3,
    "num_attention_heads": 2,
    "intermediate_size": 32,
    "max_position_embeddings": 32,
    "type_vocab_size": 2,
    "layer_norm_eps": 1e-12,
    "hidden_act": "gelu",
    "position_embedding_type": "absolute",
    "pad_token_id": 0,
}
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def bert_vocab() -> list[str]:
    """Special tokens, the frontend's punctuation, and every character of the texts (but ``龘``) once."""
    chars = []
    for char in ",.!?-…" + "".join(BERT_TEXTS) + BERT_EXTRA_CHARS:
        if char not in chars and char != "龘":
            chars.append(char)
    return [*SPECIAL_TOKENS, *chars]


def randomise_bert(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Every parameter from ``generator``: matrices and embeddings ``N(0, 1 / fan_in)`` (embeddings ``N(0, 1)``), LayerNorm scales ``1 + N(0, 0.2)``, biases ``N(0, 0.2)``."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if name.endswith("bias"):
                param.copy_(0.2 * noise)
            elif "LayerNorm" in name:
                param.copy_(1.0 + 0.2 * noise)
            elif "embeddings" in name:
                param.copy_(noise)
            else:
                param.copy_(noise / math.sqrt(param.shape[1]))


def bert_fixtures() -> None:
    generator = torch.Generator().manual_seed(BERT_SEED)
    vocab = bert_vocab()
    config = BertConfig(vocab_size=len(vocab), **BERT_TINY)
    model = BertForMaskedLM(config).eval()
    randomise_bert(model, generator)

    safetensors_dir, bin_dir = OUT / "tiny-bert-safetensors", OUT / "tiny-bert-bin"
    for directory in (safetensors_dir, bin_dir):
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "vocab.txt").write_text("".join(token + "\n" for token in vocab), encoding="utf-8")
        shutil.copy(Path(tmp) / "vocab.txt", bin_dir / "vocab.txt")
        BertTokenizerFast(vocab=str(Path(tmp) / "vocab.txt")).save_pretrained(Path(tmp) / "tok")
        shutil.copy(Path(tmp) / "tok" / "tokenizer.json", safetensors_dir / "tokenizer.json")
        model.save_pretrained(Path(tmp) / "model")
        for name in ("config.json", "model.safetensors"):
            shutil.copy(Path(tmp) / "model" / name, safetensors_dir / name)
    config.to_json_file(bin_dir / "config.json")
    state = {key: value.detach().clone().contiguous() for key, value in model.state_dict().items()}
    state["bert.embeddings.position_ids"] = torch.arange(config.max_position_embeddings)[None]
    torch.save(state, bin_dir / "pytorch_model.bin")

    # Upstream: AutoTokenizer of the directory; here each directory's own tokenizer files, as AutoTokenizer reads them.
    tokenizers = {"safetensors": BertTokenizerFast.from_pretrained(safetensors_dir), "bin": BertTokenizerFast.from_pretrained(bin_dir)}
    arrays: dict[str, np.ndarray] = {}
    with torch.no_grad():
        for i, text in enumerate(BERT_TEXTS):
            ids = {name: tok(text, return_tensors="pt")["input_ids"] for name, tok in tokenizers.items()}
            assert torch.equal(ids["safetensors"], ids["bin"]), text
            arrays[f"ids_{i}"] = ids["bin"][0].numpy().astype(np.int32)
            # Upstream's get_bert_feature: model(**inputs, output_hidden_states=True)["hidden_states"][-3].
            inputs = tokenizers["bin"](text, return_tensors="pt")
            arrays[f"hidden_{i}"] = model(**inputs, output_hidden_states=True)["hidden_states"][-3][0].numpy().astype(np.float32)
        batch = tokenizers["bin"](list(BERT_TEXTS), return_tensors="pt", padding=True)
        arrays["batch_ids"] = batch["input_ids"].numpy().astype(np.int32)
        arrays["batch_mask"] = batch["attention_mask"].numpy().astype(np.int32)
        arrays["batch_hidden"] = model(**batch, output_hidden_states=True)["hidden_states"][-3].numpy().astype(np.float32)
    np.savez_compressed(OUT / "tiny_bert.npz", **arrays)

    for directory in (safetensors_dir, bin_dir):
        reloaded = BertForMaskedLM.from_pretrained(directory).eval()
        with torch.no_grad():
            again = reloaded(torch.from_numpy(arrays["ids_1"][None]).long(), output_hidden_states=True)["hidden_states"][-3][0].numpy()
        assert np.array_equal(again, arrays["hidden_1"]), directory
    info = {
        "seed": BERT_SEED,
        "texts": list(BERT_TEXTS),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "bin_keys": sorted(state),
        "safetensors_keys": sorted(model.state_dict()),
    }
    (OUT / "tiny_bert.json").write_text(json.dumps(info, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print("tiny BERT hidden_states[-3]:", {i: arrays[f"hidden_{i}"].shape for i in range(len(BERT_TEXTS))})


def bert_full_size_manifest() -> None:
    raw = json.loads((OUT / "chinese-roberta-wwm-ext-large.config.json").read_text())
    config = BertConfig(**{k: v for k, v in raw.items() if not k.startswith("_") and k not in ("architectures", "torch_dtype")})
    with torch.device("meta"):
        model = BertForMaskedLM(config)
    manifest = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "shapes": {key: list(value.shape) for key, value in model.state_dict().items()},
    }
    (OUT / "chinese-roberta-wwm-ext-large.manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print("chinese-roberta-wwm-ext-large BertForMaskedLM parameters (torch):", manifest["parameters"])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("which", nargs="?", choices=("hubert", "bert", "all"), default="all")
    which = parser.parse_args().which
    OUT.mkdir(parents=True, exist_ok=True)
    if which in ("hubert", "all"):
        tiny_fixtures()
        full_size_manifest()
    if which in ("bert", "all"):
        bert_fixtures()
        bert_full_size_manifest()
