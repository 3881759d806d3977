"""Manifest reading and validation: every problem of every line is reported at once."""

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from gptsovits_jax.data.manifest import (
    ManifestError,
    Rejection,
    Utterance,
    format_report,
    load_and_validate,
    parse_manifest,
    read_manifest,
    utterance_key,
    validate_manifest,
    write_rejections,
)
from gptsovits_jax.text.frontend import LANGUAGES, text_to_phonemes

RATE = 16000
LIMITS = {"languages": ("en", "zh", "auto"), "min_seconds": 0.5, "max_seconds": 3.0}


class FakeTextError(ValueError):
    """Stands in for the frontend's ``TextError(ValueError)``."""


def fake_phonemize(text: str, language: str) -> list[str]:
    """One "phoneme" per letter or CJK character; ``<bad>`` makes the frontend raise."""
    if "<bad>" in text:
        raise FakeTextError(f"cannot normalise {text!r} as {language}")
    return [char for char in text if char.isalnum()]


def write_tone(path: Path, seconds: float, amplitude: float = 0.5) -> Path:
    """A 220 Hz tone of ``seconds`` at 16 kHz, 16-bit PCM."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(round(seconds * RATE)) / RATE
    sf.write(path, (amplitude * np.sin(2 * np.pi * 220.0 * t)).astype(np.float32), RATE, subtype="PCM_16")
    return path


def write_list(path: Path, lines: list[str], *, bom: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + "\n".join(lines).encode("utf-8") + b"\n")
    return path


@pytest.fixture
def mixed_list(tmp_path: Path) -> Path:
    """Two good lines (1 and 12) and ten bad ones, each with a different problem."""
    wavs = tmp_path / "wavs"
    write_tone(wavs / "good1.wav", 1.0)
    write_tone(wavs / "empty.wav", 0.0)
    write_tone(wavs / "silent.wav", 1.0, amplitude=0.0)
    write_tone(wavs / "short.wav", 0.2)
    write_tone(wavs / "long.wav", 4.0)
    write_tone(wavs / "ja.wav", 1.0)
    write_tone(wavs / "nophones.wav", 1.0)
    write_tone(wavs / "frontend.wav", 1.0)
    write_tone(wavs / "good2.wav", 1.5)
    (wavs / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot audio at all")
    flac = wavs / "truncated.flac"
    write_tone(flac, 2.0)
    flac.write_bytes(flac.read_bytes()[: flac.stat().st_size // 2])
    return write_list(
        tmp_path / "mixed.list",
        [
            "wavs/good1.wav|alice|en|Hello there.",
            "wavs/missing.wav|alice|en|Nobody recorded this.",
            "wavs/corrupt.wav|alice|en|This file is not audio.",
            "wavs/empty.wav|alice|en|No samples at all.",
            "wavs/silent.wav|alice|en|Only zeros.",
            "wavs/short.wav|bob|en|Too short.",
            "wavs/long.wav|bob|en|Far too long for the limit.",
            "wavs/ja.wav|bob|ja|こんにちは",
            "wavs/nophones.wav|bob|en|... !!!",
            "wavs/frontend.wav|bob|en|A <bad> sentence.",
            "wavs/good1.wav|bob|en|Listed a second time.",
            "wavs/good2.wav|bob|zh|你好，世界。",
            "wavs/truncated.flac|bob|en|Cut off halfway.",
        ],
    )


EXPECTED_REASONS = {
    2: ("missing.wav", "audio file not found"),
    3: ("corrupt.wav", "unreadable audio"),
    4: ("empty.wav", "audio has no samples"),
    5: ("silent.wav", "silent audio"),
    6: ("short.wav", "duration 0.20 s outside [0.5, 3.0] s"),
    7: ("long.wav", "duration 4.00 s outside [0.5, 3.0] s"),
    8: ("ja.wav", "unsupported language 'ja'"),
    9: ("nophones.wav", "text yields no phonemes"),
    10: ("frontend.wav", "text frontend (en): cannot normalise 'A <bad> sentence.' as en"),
    11: ("good1.wav", "duplicate key 'wavs__good1', already used by line 1"),
    13: ("truncated.flac", "audio data unreadable"),
}


def test_every_bad_line_is_rejected_with_its_own_reason(mixed_list: Path):
    good, rejected = validate_manifest(read_manifest(mixed_list), phonemize=fake_phonemize, **LIMITS)

    assert [u.line_no for u in good] == [1, 12]
    assert [r.line_no for r in rejected] == sorted(EXPECTED_REASONS)
    for rejection in rejected:
        filename, reason = EXPECTED_REASONS[rejection.line_no]
        assert Path(rejection.wav_path).name == filename
        assert reason in rejection.reason, rejection
        assert ";" not in rejection.reason, f"line {rejection.line_no} has more than its one problem: {rejection}"


def test_report_names_every_rejected_line_and_file(mixed_list: Path):
    good, rejected = validate_manifest(read_manifest(mixed_list), phonemize=fake_phonemize, **LIMITS)
    report = format_report(mixed_list, good, rejected)

    assert report.splitlines()[0] == f"{mixed_list}: 13 line(s), 2 usable (en 1, zh 1), 11 rejected"
    for line_no, (filename, reason) in EXPECTED_REASONS.items():
        [entry] = [line for line in report.splitlines() if line.startswith(f"  line {line_no}: ")]
        assert filename in entry and reason in entry


def test_all_problems_of_one_line_are_joined(tmp_path: Path):
    write_tone(tmp_path / "a.wav", 0.2, amplitude=0.0)
    list_path = write_list(tmp_path / "x.list", ["a.wav|s|ko|...", "a.wav|s|en|Again."])

    good, rejected = validate_manifest(read_manifest(list_path), phonemize=fake_phonemize, **LIMITS)

    assert good == []
    assert (
        rejected[0].reason
        == "duration 0.20 s outside [0.5, 3.0] s; silent audio (peak 0.0e+00, below 1e-03); unsupported language 'ko' (supported: en, zh, auto)"
    )
    assert rejected[1].reason.endswith("duplicate key 'a', already used by line 1")


def test_relative_paths_resolve_against_the_list_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    elsewhere = write_tone(tmp_path / "other" / "b.wav", 1.0)
    list_path = write_list(
        tmp_path / "corpus" / "train.list", ["wavs/a.wav|s|en|One.", "../other/b.wav|s|en|Two.", f"{elsewhere}|s|en|Three."]
    )
    monkeypatch.chdir(tmp_path / "other")

    utterances = read_manifest(Path("..") / "corpus" / "train.list")

    assert [u.wav_path for u in utterances] == [tmp_path / "corpus" / "wavs" / "a.wav", elsewhere, elsewhere]
    assert all(u.wav_path.is_absolute() for u in utterances)
    assert utterances[0].key == "wavs__a"
    assert utterances[1].key == utterances[2].key == utterance_key(elsewhere, list_path.parent)


def test_same_basename_in_two_folders_gets_two_keys(tmp_path: Path):
    write_tone(tmp_path / "alice" / "001.wav", 1.0)
    write_tone(tmp_path / "bob" / "001.wav", 1.0)
    list_path = write_list(tmp_path / "x.list", ["alice/001.wav|alice|en|Hi.", "bob/001.wav|bob|en|Hi."])

    good, rejected = validate_manifest(read_manifest(list_path), phonemize=fake_phonemize, **LIMITS)

    assert [u.key for u in good] == ["alice__001", "bob__001"]
    assert rejected == []


def test_keys_are_filesystem_safe(tmp_path: Path):
    assert utterance_key(tmp_path / "my data" / "clip:1?.wav", tmp_path) == "my_data__clip_1_"
    assert utterance_key(tmp_path / "说话人" / "句子.flac", tmp_path) == "说话人__句子"


def test_same_stem_with_two_extensions_is_a_duplicate_key(tmp_path: Path):
    write_tone(tmp_path / "a.wav", 1.0)
    write_tone(tmp_path / "a.flac", 1.0)
    list_path = write_list(tmp_path / "x.list", ["a.wav|s|en|One.", "a.flac|s|en|Two."])

    good, rejected = validate_manifest(read_manifest(list_path), phonemize=fake_phonemize, **LIMITS)

    assert [u.line_no for u in good] == [1]
    assert rejected == [Rejection(2, str(tmp_path / "a.flac"), "duplicate key 'a', already used by line 1")]


def test_bom_comments_blank_lines_and_crlf_are_tolerated(tmp_path: Path):
    list_path = write_list(
        tmp_path / "x.list",
        ["# speakers: alice", "", "a.wav|alice|EN|Hello.\r", "   ", "# b.wav|alice|en|commented out", "b.wav | alice | ZH | 你好。\r"],
        bom=True,
    )

    utterances = read_manifest(list_path)

    assert utterances == [
        Utterance(3, "a", tmp_path / "a.wav", "alice", "en", "Hello."),
        Utterance(6, "b", tmp_path / "b.wav", "alice", "zh", "你好。"),
    ]


UPSTREAM_SPELLINGS = [
    ("zh", "zh"),
    ("ZH", "zh"),
    ("en", "en"),
    ("EN", "en"),
    ("En", "en"),
    ("ja", "ja"),
    ("JA", "ja"),
    ("jp", "ja"),
    ("JP", "ja"),
    ("ko", "ko"),
    ("Ko", "ko"),
    ("KO", "ko"),
    ("yue", "yue"),
    ("Yue", "yue"),
    ("YUE", "yue"),
    ("all_zh", "all_zh"),
    ("all_ja", "all_ja"),
    ("all_ko", "all_ko"),
    ("all_yue", "all_yue"),
    ("auto", "auto"),
    ("auto_yue", "auto_yue"),
]


@pytest.mark.parametrize(("code", "normalised"), UPSTREAM_SPELLINGS)
def test_upstream_language_codes_are_normalised(tmp_path: Path, code: str, normalised: str):
    write_tone(tmp_path / "a.wav", 1.0)
    list_path = write_list(tmp_path / "x.list", [f"a.wav|s|{code}|Hello."])
    limits = {**LIMITS, "languages": [normalised for _, normalised in UPSTREAM_SPELLINGS]}

    good, rejected = validate_manifest(read_manifest(list_path), phonemize=fake_phonemize, **limits)

    assert [u.language for u in good] == [normalised]
    assert rejected == []


def test_malformed_lines_are_all_named_by_read_manifest(tmp_path: Path):
    list_path = tmp_path / "x.list"
    list_path.write_bytes(b"a.wav|s|en|Fine.\nb.wav|s|en\nc.wav|s|en|A|B\n|s|en|No path.\nd.wav||en|\n\xff\xfe|s|en|x\n")

    with pytest.raises(ManifestError) as caught:
        read_manifest(list_path)

    assert [(r.line_no, r.wav_path, r.reason) for r in caught.value.rejected] == [
        (2, "b.wav", "expected 4 fields wav_path|speaker|language|text, found 3"),
        (3, "c.wav", "expected 4 fields wav_path|speaker|language|text, found 5"),
        (4, "", "empty field(s): wav_path"),
        (5, "d.wav", "empty field(s): speaker, text"),
        (6, "", "not valid UTF-8 (invalid start byte at byte 0)"),
    ]
    assert str(caught.value).startswith(f"{list_path}: 5 malformed line(s):\n  line 2: b.wav: expected 4 fields")
    utterances, rejected = parse_manifest(list_path)
    assert [u.line_no for u in utterances] == [1]
    assert len(rejected) == 5


def test_rejections_tsv_has_header_and_one_row_per_line(tmp_path: Path):
    rejected = [Rejection(2, "/data/a b.wav", "audio file not found"), Rejection(7, "/data/c.wav", "unreadable audio: Error\nin\tWAV file")]
    write_rejections(rejected, tmp_path / "rejected.tsv")

    assert (tmp_path / "rejected.tsv").read_text(encoding="utf-8") == (
        "line\tpath\treason\n2\t/data/a b.wav\taudio file not found\n7\t/data/c.wav\tunreadable audio: Error in WAV file\n"
    )


def test_load_and_validate_counts_malformed_lines_as_rejections(tmp_path: Path):
    write_tone(tmp_path / "a.wav", 1.0)
    list_path = write_list(tmp_path / "x.list", ["a.wav|s|en", "a.wav|s|en|Fine.", "missing.wav|s|en|Gone."])
    tsv = tmp_path / "rejected.tsv"

    good, rejected = load_and_validate(list_path, phonemize=fake_phonemize, rejected_path=tsv, **LIMITS)

    assert [u.line_no for u in good] == [2]
    assert [r.line_no for r in rejected] == [1, 3]
    assert tsv.read_text(encoding="utf-8").splitlines() == [
        "line\tpath\treason",
        "1\ta.wav\texpected 4 fields wav_path|speaker|language|text, found 3",
        f"3\t{tmp_path / 'missing.wav'}\taudio file not found",
    ]


def test_load_and_validate_raises_with_full_report_when_nothing_is_usable(tmp_path: Path):
    write_tone(tmp_path / "quiet.wav", 1.0, amplitude=0.0)
    list_path = write_list(tmp_path / "x.list", ["missing.wav|s|en|Gone.", "quiet.wav|s|en|Hush.", "bad line"])
    tsv = tmp_path / "rejected.tsv"

    with pytest.raises(ManifestError) as caught:
        load_and_validate(list_path, phonemize=fake_phonemize, rejected_path=tsv, **LIMITS)

    report = caught.value.report
    assert report.splitlines()[0] == f"{list_path}: 3 line(s), 0 usable (none), 3 rejected"
    assert f"line 1: {tmp_path / 'missing.wav'}: audio file not found" in report
    assert f"line 2: {tmp_path / 'quiet.wav'}: silent audio" in report
    assert "line 3: bad line: expected 4 fields" in report
    assert [r.line_no for r in caught.value.rejected] == [1, 2, 3]
    assert len(tsv.read_text(encoding="utf-8").splitlines()) == 4


def test_empty_manifest_has_nothing_usable(tmp_path: Path):
    list_path = write_list(tmp_path / "x.list", ["# nothing yet"])

    assert read_manifest(list_path) == []
    with pytest.raises(ManifestError, match="0 line"):
        load_and_validate(list_path, phonemize=fake_phonemize, **LIMITS)


def test_unknown_configured_language_is_a_clear_error(tmp_path: Path):
    with pytest.raises(ValueError, match=r"languages \['fr'\] are not supported"):
        validate_manifest([], languages=("en", "fr"), min_seconds=0.5, max_seconds=3.0, phonemize=fake_phonemize)


def test_demo_corpus_is_complete_and_valid(repo_root: Path, tiny_config):
    list_path = repo_root / "data" / "demo" / "demo.list"
    data = tiny_config.data

    good, rejected = load_and_validate(
        list_path,
        languages=tiny_config.text.languages,
        min_seconds=data.min_seconds,
        max_seconds=data.max_seconds,
        phonemize=strict_phonemize,
    )

    assert rejected == [], format_report(list_path, good, rejected)
    languages = Counter(u.language for u in good)
    speakers = Counter(u.speaker for u in good)
    assert languages["en"] >= 80 and languages["zh"] >= 8, languages
    assert languages["ja"] >= 2 and languages["ko"] >= 2 and languages["yue"] >= 2, languages
    assert len(speakers) >= 2 and min(speakers.values()) >= 20, speakers
    for utterance in good:
        assert utterance.wav_path.is_relative_to(list_path.parent)
        info = sf.info(utterance.wav_path)
        assert (info.samplerate, info.channels, info.format, info.subtype) == (22050, 1, "FLAC", "PCM_16"), utterance
        assert 1.0 <= info.duration <= 8.0, (utterance, info.duration)
    assert 240.0 <= sum(sf.info(u.wav_path).duration for u in good) <= 420.0


def strict_phonemize(text: str, language: str) -> list[str]:
    """The real frontend as preprocessing calls it."""
    return text_to_phonemes(text, language, strict=True)


REAL_FRONTEND_LINES = {
    # line: (list line, rejection reason or None when the line is usable)
    1: ("a.wav|s|ja|今日はいい天気ですね。", None),
    2: ("b.wav|s|JP|東京タワー。", None),
    3: ("c.wav|s|KO|안녕하세요.", None),
    4: ("d.wav|s|YUE|佢個鋤頭太短啦。", None),
    5: ("e.wav|s|auto|我喜欢 Python，今日はいい天気。", None),
    6: ("f.wav|s|zh|我喜欢Python。", "text frontend (zh): text in a language other than 'zh': 'Python' (Latin letters)"),
    7: ("g.wav|s|ja|今日は안녕。", "text frontend (ja): text in a language other than 'ja': '안녕' (Hangul)"),
    8: ("h.wav|s|ja|「」", "text frontend (ja): characters the frontend cannot read: '「」' in 'ja'"),
    9: ("i.wav|s|yue|你好艹。", "text frontend (yue): characters the 'yue' frontend cannot read: '艹'"),
    10: ("j.wav|s|zh|？！……", "text frontend (zh): text '？！……' yields no phonemes in language 'zh'"),
    11: ("k.wav|s|ko|안녕 漢字", "text frontend (ko): text in a language other than 'ko': '漢字' (Chinese characters)"),
    12: ("l.wav|s|all_ko|TV를 봤어요.", None),
    13: ("m.wav|s|fr|Bonjour.", "unsupported language 'fr'"),
}


def test_real_frontend_rejections_name_the_language_and_the_characters(tmp_path: Path):
    lines = []
    for line, _ in REAL_FRONTEND_LINES.values():
        write_tone(tmp_path / line.split("|")[0], 1.0)
        lines.append(line)
    list_path = write_list(tmp_path / "x.list", lines)
    rejected_path = tmp_path / "rejected.tsv"

    good, _ = load_and_validate(
        list_path, languages=LANGUAGES, min_seconds=0.5, max_seconds=3.0, phonemize=strict_phonemize, rejected_path=rejected_path
    )

    assert [u.line_no for u in good] == [n for n, (_, reason) in REAL_FRONTEND_LINES.items() if reason is None]
    assert [u.language for u in good] == ["ja", "ja", "ko", "yue", "auto", "all_ko"]
    rows = rejected_path.read_text(encoding="utf-8").splitlines()
    assert rows[0] == "line\tpath\treason"
    by_line = {int(row.split("\t")[0]): row.split("\t")[2] for row in rows[1:]}
    assert sorted(by_line) == [n for n, (_, reason) in REAL_FRONTEND_LINES.items() if reason is not None]
    for line_no, reason in by_line.items():
        assert REAL_FRONTEND_LINES[line_no][1] in reason, (line_no, reason)


def test_missing_extra_rejects_the_line_with_the_pip_install(tmp_path: Path):
    from gptsovits_jax.text.extras import MissingExtraError

    def phonemize(text: str, language: str) -> list[str]:
        if language == "ja":
            raise MissingExtraError("the 'ja' text frontend needs ..., install them with pip install 'gptsovits-jax[ja]'")
        return strict_phonemize(text, language)

    write_tone(tmp_path / "a.wav", 1.0)
    write_tone(tmp_path / "b.wav", 1.0)
    list_path = write_list(tmp_path / "x.list", ["a.wav|s|ja|こんにちは。", "b.wav|s|en|Hello there."])

    good, rejected = validate_manifest(read_manifest(list_path), languages=LANGUAGES, min_seconds=0.5, max_seconds=3.0, phonemize=phonemize)

    assert [u.language for u in good] == ["en"]
    assert "text frontend (ja) unavailable" in rejected[0].reason
    assert "pip install 'gptsovits-jax[ja]'" in rejected[0].reason
    assert "; " not in rejected[0].reason  # one problem: preprocessing splits a reason at "; "
