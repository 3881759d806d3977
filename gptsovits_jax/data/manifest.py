"""Annotation manifests: read and validate upstream ``.list`` files.

One utterance per line, UTF-8 (a byte-order mark is tolerated)::

    wav_path|speaker|language|text

``wav_path`` is absolute or relative to the list file's directory; blank lines
and lines starting with ``#`` are skipped. Language codes are upstream's in any
case (``zh``/``ZH``, ``en``/``EN``/``En``, ``ja``/``JA``/``jp``/``JP``, ``ko``/``KO``,
``yue``/``YUE``, ``all_zh``/``all_ja``/``all_ko``/``all_yue``, ``auto``, ``auto_yue``)
and are normalised to ``text.frontend.LANGUAGES`` (``JP`` -> ``ja``).

Validation checks every line and never stops at the first problem, so one run
reports everything a user has to fix: malformed lines, missing, corrupt, empty
or silent audio, durations out of range, unsupported languages, text the
frontend rejects or turns into no phonemes, and duplicate keys.

Cost: the duration comes from the file header (``soundfile.info``), but the
silence check decodes every file once, in blocks of bounded memory. That also
catches files whose header is fine but whose data is truncated. For the demo
corpus (about 5 minutes of audio) this takes well under a second; for a corpus
of N hours expect roughly the time of one decoding pass over it, which the
preprocessing pass repeats anyway.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from gptsovits_jax.text.frontend import LANGUAGE_SPELLINGS, LANGUAGES

KNOWN_LANGUAGES = LANGUAGES
FIELDS = ("wav_path", "speaker", "language", "text")
# A file whose peak stays below -60 dBFS holds no usable speech.
SILENCE_PEAK = 1e-3
_BLOCK_FRAMES = 65536
_UNSAFE_KEY_CHARS = re.compile(r"[^\w.-]")
_TSV_BREAKS = re.compile(r"[\t\r\n]+")

Phonemize = Callable[[str, str], Sequence[str]]


class ManifestError(ValueError):
    """A manifest has malformed lines (``read_manifest``) or no usable line (``load_and_validate``).

    ``report`` is the full human-readable report and ``rejected`` every rejected line.
    """

    def __init__(self, report: str, rejected: Sequence[Rejection]):
        super().__init__(report)
        self.report = report
        self.rejected = list(rejected)


@dataclass(frozen=True)
class Utterance:
    """One manifest line.

    ``key`` is a filesystem-safe id (the audio path relative to the list file's
    directory, without extension, folders joined by ``__``) used to name cached
    features; ``wav_path`` is absolute; ``language`` is lower-case.
    """

    line_no: int
    key: str
    wav_path: Path
    speaker: str
    language: str
    text: str


@dataclass(frozen=True)
class Rejection:
    """A manifest line that cannot be used: ``wav_path`` as resolved (or as written if unparseable)."""

    line_no: int
    wav_path: str
    reason: str

    def __str__(self) -> str:
        return f"line {self.line_no}: {self.wav_path or '<no path>'}: {self.reason}"


def utterance_key(wav_path: Path, base_dir: Path) -> str:
    """Filesystem-safe id of an absolute ``wav_path``, unique per path below ``base_dir``.

    ``base/spk1/a.wav`` gives ``spk1__a``, so equal basenames in different
    folders get different keys. Paths outside ``base_dir`` use all their folders.
    Characters other than letters, digits, ``.``, ``-`` and ``_`` become ``_``;
    the rare collisions that this or a shared stem (``a.wav``, ``a.flac``) causes
    are reported by :func:`validate_manifest` as duplicate keys.
    """
    try:
        relative = wav_path.relative_to(base_dir)
    except ValueError:
        relative = Path(*wav_path.parts[1:])
    parts = relative.with_suffix("").parts
    return "__".join(_UNSAFE_KEY_CHARS.sub("_", part) for part in parts)


def parse_manifest(list_path: str | os.PathLike) -> tuple[list[Utterance], list[Rejection]]:
    """Parse every line of a ``.list`` file; malformed lines become rejections, in line order."""
    list_path = Path(list_path)
    base_dir = Path(os.path.normpath(list_path.absolute().parent))
    raw = list_path.read_bytes().removeprefix(b"\xef\xbb\xbf")
    utterances: list[Utterance] = []
    rejected: list[Rejection] = []
    for line_no, raw_line in enumerate(raw.split(b"\n"), start=1):
        try:
            line = raw_line.decode("utf-8").strip()
        except UnicodeDecodeError as error:
            rejected.append(Rejection(line_no, "", f"not valid UTF-8 ({error.reason} at byte {error.start})"))
            continue
        if not line or line.startswith("#"):
            continue
        fields = [field.strip() for field in line.split("|")]
        if len(fields) != len(FIELDS):
            rejected.append(Rejection(line_no, fields[0], f"expected {len(FIELDS)} fields {'|'.join(FIELDS)}, found {len(fields)}"))
            continue
        wav_field, speaker, language, text = fields
        empty = [name for name, value in zip(FIELDS, fields) if not value]
        if empty:
            rejected.append(Rejection(line_no, wav_field, f"empty field(s): {', '.join(empty)}"))
            continue
        wav_path = Path(os.path.normpath(base_dir / wav_field))
        key = utterance_key(wav_path, base_dir)
        language = LANGUAGE_SPELLINGS.get(language.lower(), language.lower())
        utterances.append(Utterance(line_no, key, wav_path, speaker, language, text))
    return utterances, rejected


def read_manifest(list_path: str | os.PathLike) -> list[Utterance]:
    """Parse a ``.list`` file strictly: raises :class:`ManifestError` naming every malformed line."""
    utterances, rejected = parse_manifest(list_path)
    if rejected:
        lines = "\n".join(f"  {rejection}" for rejection in rejected)
        raise ManifestError(f"{list_path}: {len(rejected)} malformed line(s):\n{lines}", rejected)
    return utterances


def audio_problems(wav_path: Path, min_seconds: float, max_seconds: float) -> list[str]:
    """Why an audio file is unusable (empty list if it is fine): missing, corrupt, empty, silent, too short or long."""
    if not wav_path.is_file():
        return ["audio file not found" if not wav_path.exists() else "audio path is not a file"]
    try:
        info = sf.info(wav_path)
    except (RuntimeError, OSError) as error:
        return [f"unreadable audio: {error}"]
    if info.frames <= 0:
        return ["audio has no samples"]
    problems = []
    if not min_seconds <= info.duration <= max_seconds:
        problems.append(f"duration {info.duration:.2f} s outside [{min_seconds}, {max_seconds}] s")
    peak = 0.0
    try:
        with sf.SoundFile(wav_path) as audio:
            for block in audio.blocks(blocksize=_BLOCK_FRAMES, dtype="float32", always_2d=True):
                peak = max(peak, float(np.abs(block).max(initial=0.0)))
    except (RuntimeError, OSError) as error:
        return [*problems, f"audio data unreadable: {error}"]
    if peak < SILENCE_PEAK:
        problems.append(f"silent audio (peak {peak:.1e}, below {SILENCE_PEAK:.0e})")
    return problems


def text_problems(text: str, language: str, phonemize: Phonemize) -> list[str]:
    """Why a text is unusable: the frontend raises a ``ValueError`` or returns no phonemes.

    A missing optional extra (an ``ImportError`` naming the ``pip install``) rejects the line
    too, so a corpus with a few lines in a language whose extra is absent still prepares the rest.
    """
    try:
        phonemes = phonemize(text, language)
    except ValueError as error:
        return [f"text frontend ({language}): {error}"]
    except ImportError as error:
        return [f"text frontend ({language}) unavailable: {error}"]
    return [] if len(phonemes) else ["text yields no phonemes"]


def validate_manifest(
    utterances: Iterable[Utterance],
    *,
    languages: Sequence[str],
    min_seconds: float,
    max_seconds: float,
    phonemize: Phonemize,
) -> tuple[list[Utterance], list[Rejection]]:
    """Check every utterance; returns the usable ones and one rejection per unusable line.

    A rejection lists all the line's problems, joined by ``"; "``. Of lines
    sharing a key the first keeps it and later ones are rejected. Durations are
    in seconds; ``phonemize(text, language)`` is the text frontend.
    """
    languages = [LANGUAGE_SPELLINGS.get(language.lower(), language.lower()) for language in languages]
    unknown = sorted(set(languages) - set(KNOWN_LANGUAGES))
    if unknown:
        raise ValueError(f"languages {unknown} are not supported; choose from {list(KNOWN_LANGUAGES)}")
    good: list[Utterance] = []
    rejected: list[Rejection] = []
    first_line_of_key: dict[str, int] = {}
    for utterance in utterances:
        problems = audio_problems(utterance.wav_path, min_seconds, max_seconds)
        if utterance.language in languages:
            problems += text_problems(utterance.text, utterance.language, phonemize)
        else:
            problems.append(f"unsupported language {utterance.language!r} (supported: {', '.join(languages)})")
        first = first_line_of_key.setdefault(utterance.key, utterance.line_no)
        if first != utterance.line_no:
            problems.append(f"duplicate key {utterance.key!r}, already used by line {first}")
        if problems:
            rejected.append(Rejection(utterance.line_no, str(utterance.wav_path), "; ".join(problems)))
        else:
            good.append(utterance)
    return good, rejected


def _tsv_field(value: str) -> str:
    return _TSV_BREAKS.sub(" ", value)


def write_rejections(rejected: Iterable[Rejection], path: str | os.PathLike) -> None:
    """Write ``rejected.tsv``: a ``line\\tpath\\treason`` header, then one row per rejection."""
    rows = ["line\tpath\treason"]
    rows += [f"{r.line_no}\t{_tsv_field(r.wav_path)}\t{_tsv_field(r.reason)}" for r in rejected]
    Path(path).write_text("\n".join(rows) + "\n", encoding="utf-8")


def format_report(list_path: str | os.PathLike, good: Sequence[Utterance], rejected: Sequence[Rejection]) -> str:
    """Human-readable summary: line counts, usable lines per language, every rejected line with its reason."""
    total = len(good) + len(rejected)
    languages = sorted({u.language for u in good})
    per_language = ", ".join(f"{language} {sum(u.language == language for u in good)}" for language in languages)
    lines = [f"{list_path}: {total} line(s), {len(good)} usable ({per_language or 'none'}), {len(rejected)} rejected"]
    lines += [f"  {rejection}" for rejection in rejected]
    return "\n".join(lines)


def load_and_validate(
    list_path: str | os.PathLike,
    *,
    languages: Sequence[str],
    min_seconds: float,
    max_seconds: float,
    phonemize: Phonemize,
    rejected_path: str | os.PathLike | None = None,
) -> tuple[list[Utterance], list[Rejection]]:
    """Parse and validate a manifest; malformed lines count as rejections like any other problem.

    Writes ``rejected_path`` (``rejected.tsv``) when given, even if nothing was
    rejected, so a stale file never survives a fixed manifest. Raises
    :class:`ManifestError` carrying the full report when no usable line remains.
    """
    utterances, malformed = parse_manifest(list_path)
    good, invalid = validate_manifest(
        utterances, languages=languages, min_seconds=min_seconds, max_seconds=max_seconds, phonemize=phonemize
    )
    rejected = sorted(malformed + invalid, key=lambda rejection: rejection.line_no)
    if rejected_path is not None:
        write_rejections(rejected, rejected_path)
    if not good:
        raise ManifestError(format_report(list_path, good, rejected), rejected)
    return good, rejected
