"""Config loading, overrides and validation errors that name the key."""

import dataclasses

import pytest
import yaml

from gptsovits_jax.config import Config, ConfigError, config_from_dict, load_config, to_dict


def test_v2_config_holds_upstream_hyperparameters(v2_config):
    c = v2_config
    assert (c.audio.sample_rate, c.audio.n_fft, c.audio.hop_length, c.audio.n_mels, c.audio.spec_channels) == (32000, 2048, 640, 128, 1025)
    assert c.audio.frame_rate == 50.0
    assert (c.gpt.vocab_size, c.gpt.eos, c.gpt.phoneme_vocab_size, c.gpt.hidden_dim, c.gpt.num_heads, c.gpt.num_layers) == (
        1025,
        1024,
        732,
        512,
        16,
        24,
    )
    s = c.sovits
    assert (s.hidden_channels, s.filter_channels, s.n_heads, s.n_layers, s.gin_channels, s.segment_frames) == (192, 768, 2, 6, 512, 32)
    assert s.upsample_rates == (10, 8, 2, 2, 2) and s.upsample_kernel_sizes == (16, 16, 8, 2, 2)
    assert c.discriminator.periods == (2, 3, 5, 7, 11)
    g = c.sovits_train.optim_g
    assert (g.b1, g.b2, g.eps, g.weight_decay) == (0.8, 0.99, 1e-9, 0.01)
    assert [grp.name for grp in g.groups] == ["frozen", "text_low_lr", "generator"]
    assert g.groups[1].lr_mult == 0.4
    assert c.sovits_train.c_mel == 45.0 and c.sovits_train.c_kl == 1.0
    assert c.gpt_train.optim.grad_accum_steps == 4
    assert c.gpt_train.optim.schedule.warmup_steps == 2000 and c.gpt_train.optim.schedule.total_steps == 40000


def test_tiny_config_loads_and_schedule_lengths_default_to_stage_steps(tiny_config):
    assert tiny_config.name == "tiny"
    assert tiny_config.sovits_train.optim_g.schedule.total_steps == tiny_config.sovits_train.steps
    bottom = tiny_config.gpt_train.optim.groups[0]
    assert bottom.name == "gpt_frozen_bottom" and bottom.unfreeze_step == 50 and bottom.schedule.total_steps == 250


def test_overrides_apply_with_yaml_types(repo_root):
    c = load_config(
        repo_root / "configs/tiny.yaml", ["sovits_train.batch_size=2", "sovits_train.steps=40", "audio.fmax=8000", "gpt.dropout=0"]
    )
    assert c.sovits_train.batch_size == 2
    assert c.sovits_train.optim_g.schedule.total_steps == 40  # follows the overridden steps
    assert c.audio.fmax == 8000.0 and isinstance(c.audio.fmax, float)
    assert c.gpt.dropout == 0.0
    c = load_config(repo_root / "configs/tiny.yaml", ["sovits_train.optim_g.schedule.peak_lr=1e-3"])
    assert c.sovits_train.optim_g.schedule.peak_lr == 1e-3  # YAML 1.1 reads 1e-3 as a string


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("sovits_train.batchsize=2", "unknown key sovits_train.batchsize"),
        ("nonsense.key=1", "unknown key nonsense"),
        ("sovits_train.batch_size=two", "sovits_train.batch_size: expected an integer"),
        ("sovits.upsample_rates=5", "sovits.upsample_rates: expected a list"),
        ("sovits_train.optim_g.schedule.peak_lr=-1e-4", "sovits_train.optim_g.schedule.peak_lr"),
        (
            "gpt_train.optim.schedule.warmup_steps=400",
            "gpt_train.optim.schedule.warmup_steps: warmup (400 steps) must be shorter than total_steps (300)",
        ),
        ("gpt_train.optim.schedule.name=cosine", "gpt_train.optim.schedule.name: unknown schedule 'cosine'"),
        ("sovits_train.optim_d.name=sgd", "sovits_train.optim_d.name: unknown optimizer"),
        ("sovits.upsample_rates=[10,8,2,2]", "sovits.upsample_rates: product 320 must equal audio.hop_length 640"),
        ("gpt.vocab_size=1025", "gpt.vocab_size: must be sovits.codebook_size + 1"),
        ("gpt.num_heads=5", "gpt.num_heads"),
        ("sovits_train.precision=float16", "sovits_train.precision"),
        ("sovits_train.steps=0", "sovits_train.steps: must be > 0"),
        ("data.min_seconds=100", "data.min_seconds"),
        ("parallel.distributed=true", "parallel.coordinator_address"),
        ("sovits_train.optim_g.groups=[{name: a, pattern: '('}]", "sovits_train.optim_g.groups[0].pattern: invalid regex"),
        ("sovits_train.optim_g.groups=[{name: a, pattern: '', frozen: true, unfreeze_step: 3}]", "frozen group never unfreezes"),
        ("gpt_train.optim.b1=1.5", "gpt_train.optim.b1"),
        ("sovits_train.log_every=true", "sovits_train.log_every: expected an integer"),
        ("ssl.extractor=hubert", "ssl.hubert_path: must name a local Hugging Face copy of chinese-hubert-base"),
    ],
)
def test_bad_values_fail_naming_the_key(repo_root, override, message):
    with pytest.raises(ConfigError) as err:
        load_config(repo_root / "configs/tiny.yaml", [override])
    assert message in str(err.value)
    assert "tiny.yaml" in str(err.value)


def test_malformed_override_and_missing_file(repo_root, tmp_path):
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(repo_root / "configs/tiny.yaml", ["sovits_train.batch_size"])
    with pytest.raises(FileNotFoundError, match=r"nope\.yaml"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n- not sections\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(bad)


def test_configs_are_frozen_and_round_trip(tiny_config, tmp_path):
    with pytest.raises(dataclasses.FrozenInstanceError):
        tiny_config.sovits_train.steps = 3  # type: ignore[misc]
    data = to_dict(tiny_config)
    path = tmp_path / "copy.yaml"
    path.write_text(yaml.safe_dump(data))
    assert load_config(path) == tiny_config
    assert config_from_dict({}) == config_from_dict(to_dict(Config()))
