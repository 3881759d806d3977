"""The demo command's choice of reference recording; the synthesize command's language argument."""

import dataclasses

import pytest
import soundfile

from gptsovits_jax.cli import build_parser, demo_reference
from gptsovits_jax.infer import REFERENCE_SECONDS
from tests.data.test_preprocess import demo_subset


def test_demo_reference_is_the_first_english_utterance_of_upstreams_length(tiny_config, repo_root):
    wav, text, language = demo_reference(tiny_config)
    assert language == "en"
    assert REFERENCE_SECONDS[0] <= soundfile.info(str(wav)).duration <= REFERENCE_SECONDS[1]
    lines = (repo_root / "data" / "demo" / "demo.list").read_text(encoding="utf-8").splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith(f"{wav.parent.name}/{wav.name}|"))
    assert lines[first].endswith(f"|en|{text}")
    for line in lines[:first]:  # every earlier English line is outside 3-10 s
        path, _, lang, _ = line.split("|")
        seconds = soundfile.info(str(repo_root / "data" / "demo" / path)).duration
        assert lang != "en" or not REFERENCE_SECONDS[0] <= seconds <= REFERENCE_SECONDS[1]


def test_demo_reference_falls_back_to_the_longest_english_utterance(tiny_config, tmp_path):
    short = [0, 4, 8]  # three English lines, each under 3 s
    list_path = demo_subset(tmp_path, short)
    config = dataclasses.replace(tiny_config, data=dataclasses.replace(tiny_config.data, list_path=str(list_path)))
    durations = {}
    for line in list_path.read_text(encoding="utf-8").splitlines():
        path = line.split("|")[0]
        durations[path] = soundfile.info(str(tmp_path / path)).duration
    assert max(durations.values()) < REFERENCE_SECONDS[0]
    wav, _, _ = demo_reference(config)
    assert f"{wav.parent.name}/{wav.name}" == max(durations, key=durations.get)


SYNTHESIZE = [
    "synthesize",
    "--gpt-ckpt",
    "g",
    "--sovits-ckpt",
    "s",
    "--ref-wav",
    "r.wav",
    "--ref-text",
    "Hi.",
    "--text",
    "x",
    "--out",
    "o.wav",
]


@pytest.mark.parametrize(
    ("spelling", "language"),
    [("JP", "ja"), ("ja", "ja"), ("KO", "ko"), ("YUE", "yue"), ("all_yue", "all_yue"), ("auto_yue", "auto_yue"), ("EN", "en")],
)
def test_synthesize_accepts_upstream_language_spellings(spelling, language):
    args = build_parser().parse_args([*SYNTHESIZE, "--language", spelling, "--ref-language", spelling])
    assert (args.language, args.ref_language) == (language, language)


def test_synthesize_rejects_an_unknown_language(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args([*SYNTHESIZE, "--language", "fr"])
    assert "unsupported language 'fr'" in capsys.readouterr().err


def test_synthesize_without_the_extra_says_which_pip_install(monkeypatch, capsys):
    from gptsovits_jax.cli import main
    from gptsovits_jax.text import japanese
    from gptsovits_jax.text.extras import MissingExtraError

    def missing():
        raise MissingExtraError("the 'ja' text frontend needs pyopenjtalk-plus, install them with pip install 'gptsovits-jax[ja]'")

    monkeypatch.setattr(japanese, "_openjtalk", missing)
    args = [a if a != "x" else "こんにちは" for a in SYNTHESIZE]
    # In-process: no --no-compile-cache, which would turn the cache off for the rest of this test worker.
    assert main([*args, "--language", "ja", "--ref-language", "en"]) == 2
    assert "pip install 'gptsovits-jax[ja]'" in capsys.readouterr().err
