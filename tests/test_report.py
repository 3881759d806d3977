"""The run report: one PNG from two checkpoints, the metrics of their runs and an evaluation utterance of the cache."""

import json

import numpy as np
import pytest

from gptsovits_jax import cli, report
from gptsovits_jax.config import load_config
from gptsovits_jax.data import preprocess
from gptsovits_jax.train.checkpoint import Checkpointer
from gptsovits_jax.train.gpt_step import create_gpt_state
from gptsovits_jax.train.sovits_step import create_sovits_state
from tests.conftest import SMALL_SOVITS

SMALL = [*SMALL_SOVITS, "gpt.hidden_dim=32", "gpt.num_layers=1", "gpt.ffn_dim=64", "ssl.dim=32", "data.eval_utterances=1"]
LINES = (0, 1, 2)  # three English demo utterances; the split holds one out


@pytest.fixture(scope="module")
def runs(repo_root, tmp_path_factory):
    """``(gpt run, sovits run, cache)``: fresh checkpoints at step 3, two logged steps each, a three-utterance cache."""
    root = tmp_path_factory.mktemp("report")
    demo = (repo_root / "data/demo/demo.list").read_text(encoding="utf-8").splitlines()
    manifest = root / "three.list"
    manifest.write_text("".join(f"{repo_root / 'data/demo' / demo[i].split('|', 1)[0]}|{demo[i].split('|', 1)[1]}\n" for i in LINES))
    config = load_config(repo_root / "configs/tiny.yaml", [*SMALL, f"data.cache_dir={root / 'cache'}", f"data.list_path={manifest}"])
    preprocess.preprocess(config, progress=False, num_workers=1)
    records = {
        "sovits": [
            {"step": 1, "loss/g/mel": 90.0, "lr/generator": 1e-5, "lr/discriminator": 1e-5},
            {"step": 3, "loss/g/mel": 80.0, "val/mel": 85.0, "lr/generator": 2e-4, "lr/discriminator": 1e-4},
        ],
        "gpt": [{"step": 1, "loss/ce": 40.0, "lr/gpt": 1e-5}, {"step": 3, "loss/ce": 30.0, "val/ce": 3.0, "lr/gpt": 1e-3}],
    }
    for stage, create in (("gpt", create_gpt_state), ("sovits", create_sovits_state)):
        state, _ = create(config)
        checkpointer = Checkpointer(root / stage, config, stage)
        checkpointer.save(3, state, {})
        checkpointer.close()
        (root / stage / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records[stage]))
    return root / "gpt", root / "sovits", root / "cache"


def test_evaluation_utterance_is_the_first_of_the_eval_split(runs):
    _, _, cache = runs
    index = preprocess.load_index(cache)
    utt = report.evaluation_utterance(cache)
    assert [utt.key] == index["split"]["eval"]
    assert utt.spec.shape[0] * 640 == utt.wav.shape[0] and utt.ssl.shape[0] == utt.spec.shape[0]
    assert utt.phoneme_ids.dtype == np.int32 and utt.text and utt.language == "en"
    with pytest.raises(ValueError, match="no utterance 'nope'"):
        report.evaluation_utterance(cache, "nope")


def test_report_draws_a_png_and_measures_the_resynthesis(runs, tmp_path):
    gpt, sovits, _ = runs
    result = report.write_report(gpt, sovits / "checkpoints", tmp_path / "r" / "report.png")
    assert result.path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and result.path.stat().st_size > 20_000
    assert -1.0 <= result.resynthesis_correlation <= 1.0 or np.isnan(result.resynthesis_correlation)
    assert result.synthesis_seconds >= 0


def test_report_command_names_a_missing_utterance(runs, tmp_path, capsys):
    gpt, sovits, _ = runs
    code = cli.main(
        ["report", "--gpt-ckpt", str(gpt), "--sovits-ckpt", str(sovits), "--out", str(tmp_path / "x.png"), "--utterance", "nope"]
    )
    assert code == 2 and "no utterance 'nope'" in capsys.readouterr().err
