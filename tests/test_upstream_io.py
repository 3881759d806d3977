"""import-upstream, --init-from and export-upstream, on upstream's small parity fixtures.

The fixtures (``tests/fixtures/upstream/parity_*``, see ``tests/fixtures/README.md``) are upstream's
own modules at small sizes saved as upstream saves them; ``parity_v2.json`` holds the
``configs/tiny.yaml`` overrides that build the same models here. Those sizes are not v2's, so the
commands run with ``--allow-any-size`` (the mapping stays strict).
"""

import contextlib
import dataclasses
import io
import json
import shutil

import jax
import numpy as np
import optax
import pytest
from flax import traverse_util

from gptsovits_jax.cli import main
from gptsovits_jax.config import load_config
from gptsovits_jax.torch_checkpoint import read_torch_checkpoint
from gptsovits_jax.train.checkpoint import FIELDS_KEY, Checkpointer, read_checkpoint_config, read_checkpoint_meta, restore_state_fields
from gptsovits_jax.train.parallel import make_mesh
from gptsovits_jax.train.restore import STAGE_FIELDS, initial_state, restore_train_state, restore_variables
from gptsovits_jax.train.stages import build_stage
from gptsovits_jax.upstream_io import (
    UpstreamIOError,
    completed_epochs,
    fresh_variables,
    starting_variables,
)
from gptsovits_jax.upstream_weights import load_upstream_checkpoint, project_to_upstream, upstream_state_dict

TRAINING = [
    "gpt_train.batch_size=2",
    "gpt_train.steps=3",
    "gpt_train.log_every=1",
    "gpt_train.optim.schedule.warmup_steps=1",
    "sovits_train.batch_size=2",
]
"""A few real GPT steps on the synthetic batch."""


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def flat(tree) -> dict:
    return traverse_util.flatten_dict(tree, sep="/")


def assert_trees_equal(actual, expected):
    actual, expected = flat(actual), flat(expected)
    assert sorted(actual) == sorted(expected)
    for path, value in expected.items():
        np.testing.assert_array_equal(np.asarray(actual[path]), np.asarray(value), err_msg=path)


def adam_moments(opt_state) -> list:
    nodes = jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, optax.ScaleByAdamState))
    return [n for n in nodes if isinstance(n, optax.ScaleByAdamState)]


def with_init_from(config, stage: str, path, discriminator=None):
    changes = {"init_from": str(path)}
    if discriminator is not None:
        changes["init_from_discriminator"] = str(discriminator)
    field = f"{stage}_train"
    return dataclasses.replace(config, **{field: dataclasses.replace(getattr(config, field), **changes)})


@pytest.fixture(scope="module")
def fixtures(repo_root):
    return repo_root / "tests" / "fixtures" / "upstream"


@pytest.fixture(scope="module")
def overrides(fixtures):
    return json.loads((fixtures / "parity_v2.json").read_text())["project_overrides"] + TRAINING


@pytest.fixture(scope="module")
def config_args(repo_root, overrides):
    args = ["--config", str(repo_root / "configs" / "tiny.yaml")]
    for override in overrides:
        args += ["--set", override]
    return args


@pytest.fixture(scope="module")
def config(repo_root, overrides):
    return load_config(repo_root / "configs" / "tiny.yaml", overrides)


@pytest.fixture(scope="module")
def mapped(fixtures, config):
    """What each fixture file holds, mapped into the project's trees."""
    gpt, _ = load_upstream_checkpoint("gpt", fixtures / "parity_s1.ckpt", config, require_v2=False)
    generator, _ = load_upstream_checkpoint("generator", fixtures / "parity_s2G.pth", config, require_v2=False)
    params_d, _ = load_upstream_checkpoint("discriminator", fixtures / "parity_s2D.pth", config, require_v2=False)
    return {
        "gpt": {"params": gpt},
        "sovits": {"params_g": generator["params"], "quantizer": generator["quantizer"], "params_d": params_d},
    }


@pytest.fixture(scope="module")
def imported(tmp_path_factory, fixtures, config_args):
    out = tmp_path_factory.mktemp("imported")
    code, stdout, stderr = run_cli(
        "import-upstream",
        *config_args,
        "--s1",
        fixtures / "parity_s1.ckpt",
        "--s2g",
        fixtures / "parity_s2G.pth",
        "--s2d",
        fixtures / "parity_s2D.pth",
        "--out",
        out,
        "--allow-any-size",
    )
    assert code == 0, stderr
    return out, stdout


# --------------------------------------------------------------------------- import-upstream


def test_import_upstream_writes_step_0_checkpoints_holding_the_files_values(imported, mapped):
    out, stdout = imported
    assert "gpt: 31 keys, 83,746 values (float16 -> float32)" in stdout
    assert "generator: 542 keys" in stdout and "discriminator: 111 keys" in stdout
    assert "initialised fresh" not in stdout  # the generator file has enc_q, the discriminator file is given
    for stage in ("gpt", "sovits"):
        assert f"wrote {stage} checkpoint (step 0): {out / stage}" in stdout
        variables, data_state, _, saved_stage, step = restore_state_fields(out / stage, STAGE_FIELDS[stage])
        assert (saved_stage, step, data_state) == (stage, 0, {})
        assert_trees_equal(variables, mapped[stage])
        # Parameters only, as the files hold them: no optimizer moments, float16 stays float16.
        assert read_checkpoint_meta(out / stage)[0][FIELDS_KEY] == sorted(STAGE_FIELDS[stage])
        stored = {np.asarray(x).dtype for path, x in flat(variables).items() if not path.endswith("inited")}
        assert stored == {np.dtype(np.float16)}
        restored = restore_variables(out / stage, stage).variables
        assert {x.dtype for x in jax.tree.leaves(restored) if x.dtype != np.bool_} == {np.dtype(np.float32)}
        assert_trees_equal(restored, mapped[stage])
    codebook = flat(mapped["sovits"]["quantizer"])
    assert all(bool(v) for k, v in codebook.items() if k.endswith("inited"))


def test_imported_checkpoints_restore_as_train_states_with_fresh_optimizer_state(imported, mapped):
    out, _ = imported
    state, _, saved_config = restore_train_state(out / "gpt", "gpt")  # what synthesize and report read
    assert int(state.step) == 0 and saved_config.name == "tiny"
    assert_trees_equal(state.params, mapped["gpt"]["params"])
    moments = adam_moments(state.opt_state)
    assert moments and all(not np.any(np.asarray(x)) for m in moments for x in jax.tree.leaves((m.mu, m.nu)))
    state, _, _ = restore_train_state(out / "sovits", "sovits")
    assert_trees_equal(state.params_d, mapped["sovits"]["params_d"])


@pytest.mark.parametrize("stage", ["gpt", "sovits"])
def test_resuming_an_imported_folder_fills_a_fresh_state_with_the_files_values(stage, imported, mapped, config):
    variables = fresh_variables(stage, config)
    fresh, _ = initial_state(stage, config, variables)
    state, data_state, step = Checkpointer(imported[0] / stage, config, stage).restore(fresh)
    assert (step, data_state, int(state.step)) == (0, {}, 0)
    for name in STAGE_FIELDS[stage]:
        assert_trees_equal(getattr(state, name), mapped[stage][name])
        assert all(x.dtype == y.dtype for x, y in zip(jax.tree.leaves(getattr(state, name)), jax.tree.leaves(variables[name])))
    opt_states = [state.opt_state] if stage == "gpt" else [state.opt_state_g, state.opt_state_d]
    fresh_opt_states = [fresh.opt_state] if stage == "gpt" else [fresh.opt_state_g, fresh.opt_state_d]
    for restored_opt, fresh_opt in zip(opt_states, fresh_opt_states):
        for x, y in zip(jax.tree.leaves(restored_opt), jax.tree.leaves(fresh_opt)):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_import_refuses_a_config_without_v2_sizes_before_reading_any_file(repo_root, tmp_path):
    # The files do not exist: the config check must come first and name the sizes that differ.
    code, _, stderr = run_cli(
        "import-upstream",
        "--config",
        repo_root / "configs" / "tiny.yaml",
        "--s1",
        tmp_path / "missing_s1.ckpt",
        "--s2g",
        tmp_path / "missing_s2G.pth",
        "--out",
        tmp_path / "out",
    )
    assert code == 2
    assert "config 'tiny' cannot hold upstream v2 weights (gpt, generator, discriminator)" in stderr
    assert "gpt.hidden_dim: 64 (v2: 512)" in stderr and "sovits.hidden_channels: 32 (v2: 192)" in stderr
    assert not (tmp_path / "out").exists()


def test_import_refuses_an_output_that_already_holds_checkpoints(imported, config_args, tmp_path):
    out, _ = imported
    code, _, stderr = run_cli(
        "import-upstream", *config_args, "--s1", tmp_path / "a.ckpt", "--s2g", tmp_path / "b.pth", "--out", out, "--allow-any-size"
    )
    assert code == 2 and "already holds a checkpoint; choose another --out" in stderr


def test_an_import_whose_generator_file_fails_leaves_nothing_behind(fixtures, config_args, tmp_path):
    # The GPT file is good and is written first; the "generator" is a GPT file: no key maps.
    out = tmp_path / "out"
    code, _, stderr = run_cli(
        "import-upstream",
        *config_args,
        "--s1",
        fixtures / "parity_s1.ckpt",
        "--s2g",
        fixtures / "parity_s1.ckpt",
        "--out",
        out,
        "--allow-any-size",
    )
    assert code == 2 and "parity_s1.ckpt" in stderr and "not an upstream v2 generator state dict" in stderr
    assert not (out / "gpt").exists() and not (out / "sovits").exists()


# --------------------------------------------------------------------------- --init-from


@pytest.mark.parametrize("source", ["upstream file", "project checkpoint"])
@pytest.mark.parametrize("stage", ["gpt", "sovits"])
def test_init_from_starts_at_step_0_with_those_params_and_zero_moments(stage, source, imported, mapped, fixtures, config, tmp_path):
    if source == "project checkpoint":
        config = with_init_from(config, stage, imported[0])  # import-upstream's output: its gpt/sovits folder is used
    elif stage == "gpt":
        config = with_init_from(config, stage, fixtures / "parity_s1.ckpt")
    else:
        config = with_init_from(config, stage, fixtures / "parity_s2G.pth", fixtures / "parity_s2D.pth")
    variables = starting_variables(stage, config, tmp_path / "run", require_v2=False)
    _, state = build_stage(stage, config, make_mesh(1), (), variables)
    assert int(state.step) == 0
    if stage == "gpt":
        assert_trees_equal(state.params, mapped["gpt"]["params"])
        opt_states = [state.opt_state]
    else:
        assert_trees_equal({"params_g": state.params_g, "quantizer": state.quantizer, "params_d": state.params_d}, mapped["sovits"])
        opt_states = [state.opt_state_g, state.opt_state_d]
    for opt_state in opt_states:
        moments = adam_moments(opt_state)
        assert moments
        for m in moments:
            assert int(m.count) == 0
            assert all(not np.any(np.asarray(x)) for x in jax.tree.leaves((m.mu, m.nu)))


def test_init_from_an_upstream_file_checks_the_config_before_reading(tiny_config, tmp_path):
    config = with_init_from(tiny_config, "gpt", tmp_path / "missing.ckpt")
    from gptsovits_jax.upstream_weights import WeightMappingError

    with pytest.raises(WeightMappingError, match=r"gpt\.hidden_dim: 64 \(v2: 512\)"):
        starting_variables("gpt", config, tmp_path / "run")


def test_init_from_a_checkpoint_of_other_sizes_lists_the_arrays(imported, tiny_config, tmp_path):
    from gptsovits_jax.train.checkpoint import CheckpointMismatchError

    config = with_init_from(tiny_config, "gpt", imported[0] / "gpt")
    with pytest.raises(CheckpointMismatchError, match=r"params/ar_predict_layer/kernel: checkpoint \[32, 33\] vs config \[64, 65\]"):
        starting_variables("gpt", config, tmp_path / "run")


def test_sovits_init_from_without_a_discriminator_file_starts_the_discriminator_fresh(fixtures, config, mapped, tmp_path, capsys):
    config = with_init_from(config, "sovits", fixtures / "parity_s2G.pth")
    variables = starting_variables("sovits", config, tmp_path / "run", require_v2=False)
    assert "discriminator: no file given, initialised fresh (11,276 values)" in capsys.readouterr().out
    assert_trees_equal(variables["params_g"], mapped["sovits"]["params_g"])
    fresh = flat(variables["params_d"])
    assert any(not np.array_equal(np.asarray(fresh[k]), v) for k, v in flat(mapped["sovits"]["params_d"]).items())


@pytest.fixture(scope="module")
def gpt_run(tmp_path_factory, imported, config_args):
    """Three real GPT steps on the synthetic batch, from import-upstream's output."""
    workdir = tmp_path_factory.mktemp("gpt_run")
    code, stdout, stderr = run_cli(
        "train-gpt", *config_args, "--workdir", workdir, "--init-from", imported[0], "--synthetic", "--no-progress", "--allow-any-size"
    )
    assert code == 0, stderr
    return workdir, stdout


def test_train_gpt_init_from_runs_real_steps_from_the_imported_weights(gpt_run, imported, mapped):
    workdir, stdout = gpt_run
    assert f"gpt: starting from {imported[0]} (fresh optimizer state, step 0)" in stdout
    assert "training finished at step 3" in stdout
    variables, data_state, _, _, step = restore_state_fields(workdir, ("params",))
    assert step == 3 and data_state == {"position": 3}
    lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines if "loss/ce" in line] == [1, 2, 3]
    assert all(np.isfinite(line["loss/ce"]) for line in lines if "loss/ce" in line)
    changed = [k for k, v in flat(mapped["gpt"]["params"]).items() if not np.array_equal(flat(variables["params"])[k], v)]
    assert changed  # trained


def test_resume_wins_over_init_from_and_says_so(gpt_run, config_args, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(gpt_run[0], workdir)
    missing = tmp_path / "never_read.ckpt"  # does not exist: reading it would fail
    code, stdout, stderr = run_cli(
        "train-gpt",
        *config_args,
        "--set",
        "gpt_train.steps=4",
        "--workdir",
        workdir,
        "--init-from",
        missing,
        "--resume",
        "--synthetic",
        "--no-progress",
        "--allow-any-size",
    )
    assert code == 0, stderr
    assert f"holds a checkpoint; continuing from it, not from gpt_train.init_from {missing}" in stdout
    assert "resuming gpt from" in stdout and "training finished at step 4" in stdout


# --------------------------------------------------------------------------- export-upstream


@pytest.fixture(scope="module")
def sovits_run(tmp_path_factory, imported, config):
    """A SoVITS checkpoint at step 5 whose weights are no longer float16 values (as after training)."""
    variables = restore_variables(imported[0] / "sovits", "sovits").variables  # float32, as training holds them
    rng = np.random.default_rng(0)
    variables = {
        name: jax.tree.map(lambda x: x + 1e-3 * rng.standard_normal(x.shape).astype(np.float32) if x.dtype == np.float32 else x, tree)
        if name != "quantizer"
        else tree
        for name, tree in variables.items()
    }
    state, _ = initial_state("sovits", config, variables)
    workdir = tmp_path_factory.mktemp("sovits_run")
    checkpointer = Checkpointer(workdir, config, "sovits", keep=1, asynchronous=False)
    checkpointer.save(5, state.replace(step=np.int32(5)), {"position": 5})
    checkpointer.close()
    return workdir, variables


@pytest.fixture(scope="module")
def exported(tmp_path_factory, gpt_run, sovits_run):
    out = tmp_path_factory.mktemp("exported")
    code, stdout, stderr = run_cli(
        "export-upstream", "--gpt-ckpt", gpt_run[0], "--sovits-ckpt", sovits_run[0], "--out", out, "--name", "voice", "--allow-any-size"
    )
    assert code == 0, stderr
    return out, stdout


def test_export_names_the_files_as_upstreams_trainers_do(exported):
    out, stdout = exported
    assert sorted(p.name for p in out.iterdir()) == ["voice-e3.ckpt", "voice_e5_s5.pth"]
    assert "epoch 3: synthetic data: one batch per epoch" in stdout
    assert "GPT_weights_v2/ and SoVITS_weights_v2/" in stdout


def test_exported_gpt_file_has_upstreams_layout(exported, config):
    path = exported[0] / "voice-e3.ckpt"
    assert path.read_bytes()[:2] == b"PK"  # plain torch.save zip: upstream reads it with torch.load
    ckpt = read_torch_checkpoint(path)
    assert list(ckpt) == ["weight", "config", "info"]
    assert ckpt["info"] == "GPT-e3"
    weight = ckpt["weight"]
    assert len(weight) == 31 and all(k.startswith("model.") for k in weight)
    assert {v.dtype for v in weight.values()} == {np.dtype(np.float16)}
    c = ckpt["config"]
    assert c["data"]["max_sec"] == config.gpt_train.max_semantic_tokens // 25 == 12
    assert c["model"] == {
        "vocab_size": 33,
        "phoneme_vocab_size": 732,
        "embedding_dim": 32,
        "hidden_dim": 32,
        "head": 2,
        "linear_units": 128,
        "n_layer": 2,
        "dropout": 0.0,
        "EOS": 32,
        "random_bert": 0,
    }
    assert c["train"]["epochs"] == 3 and c["train"]["exp_name"] == "voice"


def test_exported_sovits_file_has_upstreams_layout_without_enc_q(exported, config, fixtures):
    path = exported[0] / "voice_e5_s5.pth"
    assert path.read_bytes()[:2] == b"01"  # upstream's v2 tag, restored to PK by its load_sovits_new
    ckpt = read_torch_checkpoint(path)
    assert list(ckpt) == ["weight", "config", "info"]
    assert ckpt["info"] == "5epoch_5iteration"
    weight = ckpt["weight"]
    upstream_keys = set(upstream_state_dict("generator", read_torch_checkpoint(fixtures / "parity_s2G.pth")))
    assert set(weight) == {k for k in upstream_keys if not k.startswith("enc_q.")}
    assert "quantizer.vq.layers.0._codebook.embed" in weight
    assert {v.dtype for v in weight.values()} == {np.dtype(np.float16)}
    c = ckpt["config"]
    # What upstream's inference reads: SynthesizerTrn(filter_length // 2 + 1, segment_size // hop_length, n_speakers, **model).
    assert (c["data"]["filter_length"], c["data"]["hop_length"], c["data"]["win_length"], c["data"]["sampling_rate"]) == (
        2048,
        640,
        2048,
        32000,
    )
    assert c["train"]["segment_size"] // c["data"]["hop_length"] == config.sovits.segment_frames
    assert c["data"]["n_speakers"] == 300
    model = c["model"]
    assert (model["version"], model["semantic_frame_rate"], model["resblock"]) == ("v2", "25hz", "1")
    assert (model["inter_channels"], model["hidden_channels"], model["filter_channels"], model["gin_channels"]) == (8, 8, 16, 16)
    assert model["resblock_kernel_sizes"] == [3, 5] and model["upsample_rates"] == [10, 8, 2, 2, 2]
    assert c["train"]["text_low_lr_rate"] == 0.4 and c["name"] == "voice" and c["version"] == "v2"


@pytest.fixture(scope="module")
def reimported(tmp_path_factory, exported, config_args):
    out = tmp_path_factory.mktemp("reimported")
    code, stdout, stderr = run_cli(
        "import-upstream",
        *config_args,
        "--s1",
        exported[0] / "voice-e3.ckpt",
        "--s2g",
        exported[0] / "voice_e5_s5.pth",
        "--out",
        out,
        "--allow-any-size",
    )
    assert code == 0, stderr
    return out, stdout


def test_import_of_an_inference_export_reports_enc_q_and_the_discriminator_fresh(reimported):
    _, stdout = reimported
    assert (
        "generator: enc_q (the posterior encoder; upstream's inference exports leave it out): not in the file, initialised fresh" in stdout
    )
    assert "discriminator: no file given, initialised fresh (11,276 values)" in stdout


def test_parts_the_files_lack_start_from_the_stages_seeded_initialisation(reimported, config):
    imported = restore_variables(reimported[0] / "sovits", "sovits").variables
    fresh = fresh_variables("sovits", config)
    assert_trees_equal(imported["params_d"], fresh["params_d"])
    assert_trees_equal(imported["params_g"]["enc_q"], fresh["params_g"]["enc_q"])


def to_float16(tree):
    return jax.tree.map(lambda x: np.asarray(x).astype(np.float16).astype(np.float32) if np.asarray(x).dtype == np.float32 else x, tree)


def test_export_then_import_is_bit_exact_at_float16(reimported, exported, gpt_run, sovits_run):
    out, _ = reimported
    trained, _, _, _, _ = restore_state_fields(gpt_run[0], ("params",))
    back, _, _, _, _ = restore_state_fields(out / "gpt", ("params",))
    assert_trees_equal(back, to_float16(trained))
    _, variables = sovits_run
    back, _, _, _, _ = restore_state_fields(out / "sovits", ("params_g", "quantizer"))
    expected = to_float16({"params_g": variables["params_g"], "quantizer": variables["quantizer"]})
    back_g, expected_g = flat(back["params_g"]), flat(expected["params_g"])
    for path, value in expected_g.items():
        if not path.startswith("enc_q/"):  # not exported; re-initialised on import
            np.testing.assert_array_equal(back_g[path], value, err_msg=path)
    assert_trees_equal(back["quantizer"], expected["quantizer"])
    # And out again: the same bits as the exported file.
    again = project_to_upstream("generator", {"params": back["params_g"], "quantizer": back["quantizer"]}, include_enc_q=False)
    written = read_torch_checkpoint(exported[0] / "voice_e5_s5.pth")["weight"]
    assert set(again) == set(written)
    for key, value in written.items():
        np.testing.assert_array_equal(again[key].view(np.uint16), value.view(np.uint16), err_msg=key)


def test_export_refuses_runs_without_v2_sizes_unless_allowed(imported, tmp_path):
    out, _ = imported
    code, _, stderr = run_cli("export-upstream", "--gpt-ckpt", out / "gpt", "--sovits-ckpt", out / "sovits", "--out", tmp_path / "x")
    assert code == 2 and "config 'tiny' cannot hold upstream v2 weights (gpt)" in stderr
    assert not (tmp_path / "x").exists()


def test_epochs_are_counted_from_the_data_position(config, tmp_path):
    assert completed_epochs("gpt", config, 0, {}).epochs == 0
    assert completed_epochs("gpt", config, 7, {"position": 7}).epochs == 7
    state = {"next_batch": 12, "data": "0123456789abcdef", "seed": 1234, "batch_size": 2}
    with pytest.raises(UpstreamIOError, match="cannot count the sovits run's epochs from its training data"):
        completed_epochs("sovits", config, 12, state, cache_dir=tmp_path / "no_cache")
    with pytest.raises(UpstreamIOError, match="records no data position"):
        completed_epochs("gpt", config, 5, {})


def test_imported_config_is_the_one_given(imported):
    config, stage, step = read_checkpoint_config(imported[0] / "sovits")
    assert (config.name, stage, step) == ("tiny", "sovits", 0)
    assert config.sovits.hidden_channels == 8
