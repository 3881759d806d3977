"""Chinese BERT features per phoneme, as upstream feeds its GPT: ``[phonemes, bert_dim]``.

Upstream (``prepare_datasets/1-get-text.py`` and ``inference_webui.py`` ``get_bert_feature``)
tokenises the normalised Chinese text with the model directory's own tokenizer, runs
chinese-roberta-wwm-ext-large, takes ``hidden_states[-3]``, drops the ``[CLS]`` and ``[SEP]`` rows
(one row per character remains) and repeats row ``i`` ``word2ph[i]`` times, so the features follow
the phonemes. Text of other languages gets zeros. Inference cleans mixed text run by run and
computes the features of each Chinese run on its own; :func:`utterance_features` does that for
``"auto"`` lines in preprocessing and in synthesis alike (upstream's training script computes them
for ``zh`` lines only, its inference for every Chinese segment).

Tokenisation uses the directory's files through the ``tokenizers`` library, as transformers'
``BertTokenizerFast`` does: ``tokenizer.json`` when present (upstream's
``pretrained_models/chinese-roberta-wwm-ext-large`` holds only that one), else ``vocab.txt`` with a
BERT WordPiece pipeline whose lower-casing, Chinese-character splitting and accent stripping follow
``tokenizer_config.json`` (transformers' defaults without one). The text must come out as exactly
one token per character (upstream indexes the rows by character); a character outside the
vocabulary becomes ``[UNK]``, one token, as in upstream. Anything else (a character the normaliser
drops, letters read as one word piece) is a :class:`BertTextError` naming the text.

Batches: texts are padded to a few token-length buckets (powers of two from 16 up to
``max_position_embeddings``) and run with an attention mask, which the model honours exactly, so
each bucket compiles once per batch size. Nothing is ever downloaded.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gptsovits_jax.models import bert as bert_model
from gptsovits_jax.text.frontend import clean_runs

TOKENIZER_JSON = "tokenizer.json"
VOCAB_TXT = "vocab.txt"
TOKENIZER_CONFIG = "tokenizer_config.json"
MIN_BUCKET = 16
"""The shortest padded token length; buckets double from here up to ``max_position_embeddings``."""


class BertTextError(ValueError):
    """A text the BERT features cannot be computed for (tokenisation or length); the message names the text."""


def load_tokenizer(directory: str | Path):
    """A ``tokenizers.Tokenizer`` for the directory: its ``tokenizer.json``, else a BERT WordPiece pipeline over ``vocab.txt``.

    Padding and truncation are off. Raises ``FileNotFoundError`` naming the directory when it has neither file.
    """
    from tokenizers import Tokenizer
    from tokenizers.implementations import BertWordPieceTokenizer

    directory = Path(directory)
    if (directory / TOKENIZER_JSON).is_file():
        tokenizer = Tokenizer.from_file(str(directory / TOKENIZER_JSON))
    elif (directory / VOCAB_TXT).is_file():
        settings = {}
        if (directory / TOKENIZER_CONFIG).is_file():
            settings = json.loads((directory / TOKENIZER_CONFIG).read_text(encoding="utf-8"))
        tokenizer = BertWordPieceTokenizer(
            str(directory / VOCAB_TXT),
            lowercase=settings.get("do_lower_case", True),
            handle_chinese_chars=settings.get("tokenize_chinese_chars", True),
            strip_accents=settings.get("strip_accents"),
        )
    else:
        raise FileNotFoundError(f"{directory}: no BERT vocabulary ({TOKENIZER_JSON} or {VOCAB_TXT}) in this directory (text.bert_path)")
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def _tokenizer_path(directory: Path) -> Path:
    return directory / TOKENIZER_JSON if (directory / TOKENIZER_JSON).is_file() else directory / VOCAB_TXT


def bucket_tokens(n_tokens: int, maximum: int) -> int:
    """The padded length ``n_tokens`` shares a compiled model with: a power of two from 16, capped at ``maximum``."""
    length = MIN_BUCKET
    while length < n_tokens:
        length *= 2
    return min(length, maximum)


def repeat_to_phonemes(char_features: np.ndarray, word2ph: Sequence[int], text: str = "") -> np.ndarray:
    """Row ``i`` of ``char_features [n_chars, D]`` repeated ``word2ph[i]`` times: ``[sum(word2ph), D]``."""
    if len(word2ph) != char_features.shape[0]:
        raise BertTextError(f"{text!r}: word2ph has {len(word2ph)} entries for {char_features.shape[0]} characters")
    return np.repeat(char_features, np.asarray(word2ph, dtype=np.int64), axis=0)


class BertFeatureExtractor:
    """``hidden_states[-3]`` of a local Hugging Face BERT directory per character and per phoneme, in JAX.

    Raises at construction (before any work) ``FileNotFoundError`` for a missing directory, config,
    weight file or vocabulary, :class:`~gptsovits_jax.models.bert.BertConfigError` for a config it
    cannot honour or ``hidden_size != dim`` (``gpt.bert_dim``), and
    :class:`~gptsovits_jax.models.bert.BertWeightsError` for weights that do not fit.

    ``identity`` names the extractor, fingerprints of the weights and of the vocabulary file, and the
    model code: caches store it so features of other weights are recomputed, never mixed.
    """

    def __init__(self, path: str | Path, dim: int, max_batch_tokens: int = 2048):
        import jax

        self.path = Path(path)
        self.config, params = bert_model.load_bert(self.path, expected_dim=dim)
        self.tokenizer = load_tokenizer(self.path)
        self.dim = dim
        self.max_batch_tokens = max_batch_tokens
        self.module = bert_model.Bert(self.config, bert_model.FEATURE_LAYER)
        self._params = jax.device_put(bert_model.params_for_layer(params, self.config))
        self._apply = jax.jit(lambda params, ids, mask: self.module.apply({"params": params}, ids, mask))
        code = hashlib.sha256((inspect.getsource(bert_model) + inspect.getsource(BertFeatureExtractor)).encode()).hexdigest()[:16]
        vocab = hashlib.sha256(_tokenizer_path(self.path).read_bytes()).hexdigest()[:16]
        self.identity = {"extractor": "bert", "weights": bert_model.weights_fingerprint(self.path), "vocabulary": vocab, "code": code}

    def token_ids(self, text: str) -> np.ndarray:
        """``[CLS] + one id per character + [SEP]``, int32 ``[len(text) + 2]``; :class:`BertTextError` otherwise."""
        encoding = self.tokenizer.encode(text)
        ids, offsets, special = encoding.ids, encoding.offsets, encoding.special_tokens_mask
        chars = [offset for offset, is_special in zip(offsets, special) if not is_special]
        expected = [(i, i + 1) for i in range(len(text))]
        if len(ids) != len(chars) + 2 or not special[0] or not special[-1] or chars != expected:
            pieces = [f"{encoding.tokens[i]!r}@{offsets[i][0]}:{offsets[i][1]}" for i in range(len(ids)) if not special[i]]
            raise BertTextError(
                f"{text!r}: the vocabulary of {self.path} (text.bert_path) does not tokenise this text one token per character "
                f"({len(text)} characters, tokens {', '.join(pieces) or 'none'})"
            )
        if len(ids) > self.config.max_position_embeddings:
            raise BertTextError(
                f"{text!r}: {len(text)} characters; {self.path} reads at most {self.config.max_position_embeddings - 2} "
                "(max_position_embeddings minus [CLS] and [SEP]); split the text"
            )
        return np.asarray(ids, np.int32)

    def char_features_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        """float32 ``[len(text), dim]`` per text: ``hidden_states[-3]`` without the ``[CLS]``/``[SEP]`` rows.

        Texts are tokenised first (so a bad text fails before any model call), then run in batches
        of one bucket length each, a power-of-two number of rows (at most ``max_batch_tokens`` padded tokens).
        """
        ids = [self.token_ids(text) for text in texts]
        out: list[np.ndarray] = [np.zeros((0, self.dim), np.float32)] * len(texts)
        by_bucket: dict[int, list[int]] = {}
        for i, row in enumerate(ids):
            by_bucket.setdefault(bucket_tokens(len(row), self.config.max_position_embeddings), []).append(i)
        for length, items in sorted(by_bucket.items()):
            batch = 1 << max((self.max_batch_tokens // length).bit_length() - 1, 0)
            batch = min(batch, 1 << (len(items) - 1).bit_length())
            for start in range(0, len(items), batch):
                chunk = items[start : start + batch]
                padded = np.zeros((batch, length), np.int32)
                mask = np.zeros((batch, length), np.int32)
                for row, i in enumerate(chunk):
                    padded[row, : len(ids[i])] = ids[i]
                    mask[row, : len(ids[i])] = 1
                hidden = np.asarray(self._apply(self._params, padded, mask))
                for row, i in enumerate(chunk):
                    out[i] = hidden[row, 1 : len(ids[i]) - 1].astype(np.float32)
        return out

    def phoneme_features(self, text: str, word2ph: Sequence[int]) -> np.ndarray:
        """float32 ``[sum(word2ph), dim]``: upstream's ``get_bert_feature(text, word2ph)``, transposed (phonemes first)."""
        return repeat_to_phonemes(self.char_features_batch([text])[0], word2ph, text)


def utterance_features_batch(
    items: Sequence[tuple[str, str]], extractor: BertFeatureExtractor | None, dim: int, final_period: Sequence[bool] | None = None
) -> list[np.ndarray]:
    """BERT features float32 ``[Tx, dim]`` of each ``(text, language)``, aligned with ``text_to_phonemes(text, language)``.

    Chinese runs (``"zh"``, or the Chinese script runs of ``"auto"``) get their BERT features
    repeated per phoneme; other runs and every run when ``extractor`` is None get zeros. With
    ``final_period[i]`` a "." is appended to item ``i``'s last run (inference appends one to a text
    that does not end in punctuation; upstream appends it to the text, so a Chinese last run reads
    it through BERT, and other runs get a zero row). All Chinese runs of all items share batched
    model calls.
    """
    final_period = final_period or [False] * len(items)
    plans: list[list[tuple[int, np.ndarray | str, list[int] | None]]] = []
    chinese: list[str] = []
    for (text, language), period in zip(items, final_period):
        plan = []
        runs = clean_runs(text, language)
        for index, (run_language, part) in enumerate(runs):
            norm, word2ph, n_phones = part.norm_text, part.word2ph, len(part.phonemes)
            last = index == len(runs) - 1
            if extractor is not None and run_language == "zh" and word2ph:
                if period and last:
                    norm, word2ph = norm + ".", [*word2ph, 1]
                plan.append((len(chinese), norm, word2ph))
                chinese.append(norm)
            else:
                plan.append((-1, np.zeros((n_phones + int(period and last), dim), np.float32), None))
        plans.append(plan)
    char_features = extractor.char_features_batch(chinese) if chinese else []
    out = []
    for plan in plans:
        parts = [value if slot < 0 else repeat_to_phonemes(char_features[slot], word2ph, value) for slot, value, word2ph in plan]
        out.append(np.concatenate(parts, axis=0) if parts else np.zeros((0, dim), np.float32))
    return out


def utterance_features(
    text: str, language: str, extractor: BertFeatureExtractor | None, dim: int, final_period: bool = False
) -> np.ndarray:
    """:func:`utterance_features_batch` of one ``(text, language)``: float32 ``[Tx, dim]``."""
    return utterance_features_batch([(text, language)], extractor, dim, [final_period])[0]
