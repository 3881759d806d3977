"""What inference, extraction and export read from a checkpoint: parameters and codebook, never optimizer moments."""

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import traverse_util

from gptsovits_jax.config import load_config
from gptsovits_jax.train import checkpoint
from gptsovits_jax.train.checkpoint import Checkpointer, CheckpointMismatchError
from gptsovits_jax.train.gpt_step import create_gpt_state
from gptsovits_jax.train.restore import INFERENCE_FIELDS, STAGE_FIELDS, restore_train_state, restore_variables
from gptsovits_jax.train.sovits_step import create_sovits_state
from tests.conftest import SMALL_GPT, SMALL_SOVITS

CREATE = {"gpt": create_gpt_state, "sovits": create_sovits_state}


@pytest.fixture(scope="module")
def config(repo_root):
    return load_config(repo_root / "configs/tiny.yaml", [*SMALL_SOVITS, *SMALL_GPT])


def trained_looking_state(stage, config):
    """A fresh state whose optimizer moments hold non-zero values, as after training (zeros might not be stored at all)."""
    state, _ = CREATE[stage](config)
    rng = np.random.default_rng(0)
    moments = {"gpt": ("opt_state",), "sovits": ("opt_state_g", "opt_state_d")}[stage]
    noisy = {name: jax.tree.map(lambda x: (rng.standard_normal(x.shape) + 2).astype(x.dtype), getattr(state, name)) for name in moments}
    return state.replace(**noisy)


def save(workdir, config, stage, state):
    saver = Checkpointer(workdir, config, stage, asynchronous=False)
    saver.save(5, state, {"position": 5})
    saver.close()


def flat(tree):
    return traverse_util.flatten_dict(tree, sep="/")


def assert_fields_equal(restored, state, fields):
    assert sorted(restored) == sorted(fields)
    for name in fields:
        actual, expected = flat(restored[name]), flat(getattr(state, name))
        assert sorted(actual) == sorted(expected), name
        for path, value in expected.items():
            assert actual[path].dtype == value.dtype, f"{name}/{path}"
            np.testing.assert_array_equal(np.asarray(actual[path]), np.asarray(value), err_msg=f"{name}/{path}")


@pytest.mark.parametrize("stage", ["gpt", "sovits"])
def test_inference_restore_never_reads_the_optimizer_moments(stage, config, tmp_path, monkeypatch):
    # One directory per array (orbax without OCDBT, which restore reads as well) lets the test delete
    # exactly the moments' data; their metadata stays, so the checkpoint still lists them.
    monkeypatch.setattr(
        checkpoint,
        "_handlers",
        lambda: {
            "state": ocp.StandardCheckpointHandler(use_ocdbt=False),
            "data": ocp.JsonCheckpointHandler(),
            "meta": ocp.JsonCheckpointHandler(),
        },
    )
    state = trained_looking_state(stage, config)
    save(tmp_path, config, stage, state)
    monkeypatch.undo()
    deleted = 0
    for array_dir in (tmp_path / "checkpoints" / "5" / "state").glob("opt_state*"):
        for chunk in array_dir.iterdir():
            if chunk.name != ".zarray":
                chunk.unlink()
                deleted += 1
    assert deleted > 10

    for fields in (INFERENCE_FIELDS[stage], STAGE_FIELDS[stage]):
        restored = restore_variables(tmp_path, stage, fields, device=jax.local_devices()[0])
        assert (restored.step, restored.data_state, restored.config) == (5, {"position": 5}, config)
        assert_fields_equal(restored.variables, state, fields)
        assert all(isinstance(x, jax.Array) for x in jax.tree.leaves(restored.variables))
    with pytest.raises(Exception, match="reading array"):  # the whole state does need the deleted moments
        restore_train_state(tmp_path, stage)


@pytest.mark.parametrize("stage", ["gpt", "sovits"])
def test_variables_restore_gives_what_the_whole_state_restore_holds(stage, config, tmp_path):
    save(tmp_path, config, stage, trained_looking_state(stage, config))
    whole, _, whole_config = restore_train_state(tmp_path, stage)
    restored = restore_variables(tmp_path, stage)  # numpy arrays on the host
    assert restored.config == whole_config
    assert_fields_equal(restored.variables, whole, STAGE_FIELDS[stage])


def test_variables_restore_refuses_the_other_stage_and_other_sizes(config, repo_root, tmp_path):
    state, _ = create_gpt_state(config)
    save(tmp_path, config, "gpt", state)
    with pytest.raises(CheckpointMismatchError, match=r"holds a 'gpt' checkpoint, expected 'sovits'"):
        restore_variables(tmp_path, "sovits")
    other = load_config(repo_root / "configs/tiny.yaml", [*SMALL_SOVITS, *SMALL_GPT, "gpt.hidden_dim=16"])
    with pytest.raises(CheckpointMismatchError) as err:
        restore_variables(tmp_path, "gpt", config=other)
    message = str(err.value)
    assert f"{tmp_path} (step 5) does not fit config 'tiny'" in message
    assert "params/ar_text_embedding/embedding: checkpoint [732, 32] vs config [732, 16]" in message
