"""Config loading, overrides and validation errors that name the key."""

import dataclasses
import math

import pytest
import yaml

from gptsovits_jax.config import Config, ConfigError, config_from_dict, load_config, to_dict
from gptsovits_jax.optim import groups_from_config


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
    # 40000 training steps of 4 accumulated micro-batches: 10000 optimizer updates, which the schedule counts
    assert c.gpt_train.optim.schedule.warmup_steps == 2000 and c.gpt_train.optim.schedule.total_steps == 10000


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
        ("gpt_train.remat=everything", "gpt_train.remat: must be one of none, dots, full"),
        ("sovits_train.remat=everything", "sovits_train.remat: must be one of none, dots, full"),
        ("sovits_train.scan_layers=maybe", "sovits_train.scan_layers: expected"),
        (
            "gpt_train.optim.max_consecutive_nonfinite=5",
            "gpt_train.optim.max_consecutive_nonfinite was removed: the stage's max_nonfinite_steps",
        ),
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
        ("gpt_train.init_from=' '", "gpt_train.init_from: must be a path or null"),
        ("sovits_train.init_from_discriminator=s2D2333k.pth", "sovits_train.init_from_discriminator: goes with an upstream generator file"),
        ("ssl.extractor=hubert", "ssl.hubert_path: must name a local Hugging Face copy of chinese-hubert-base"),
        ("text.bert_path=' '", "text.bert_path: must name a local Hugging Face copy of chinese-roberta-wwm-ext-large, or be null"),
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


def test_init_from_keys_take_paths_and_a_discriminator_file_beside_a_generator_file(repo_root):
    c = load_config(
        repo_root / "configs/tiny.yaml",
        [
            "sovits_train.init_from=pre/s2G2333k.pth",
            "sovits_train.init_from_discriminator=pre/s2D2333k.pth",
            "gpt_train.init_from=runs/pre",
        ],
    )
    assert (c.sovits_train.init_from, c.sovits_train.init_from_discriminator) == ("pre/s2G2333k.pth", "pre/s2D2333k.pth")
    assert c.gpt_train.init_from == "runs/pre"
    with pytest.raises(ConfigError, match="a project checkpoint holds its own discriminator"):
        load_config(repo_root / "configs/tiny.yaml", ["sovits_train.init_from=runs/pre", "sovits_train.init_from_discriminator=d.pth"])


def _cosine(s, peak, warmup, total, init, end):
    """The warmup-cosine closed form (gptsovits_jax.schedules.warmup_cosine's docstring)."""
    if s < warmup:
        return init + (peak - init) * s / warmup
    if s >= total:
        return end
    return end + (peak - end) * 0.5 * (1 + math.cos(math.pi * (s - warmup) / (total - warmup)))


def _lrs(optim_cfg, steps):
    groups = {g.name: g.schedule for g in groups_from_config(optim_cfg)}
    return {name: [0.0 if fn is None else float(fn(s)) for s in steps] for name, fn in groups.items()}


def test_finetune_recipe_has_v2_sizes_and_its_schedules_follow_the_closed_forms(repo_root):
    from gptsovits_jax.upstream_weights import check_config_holds_v2

    c = load_config(repo_root / "configs/finetune-v2.yaml")
    check_config_holds_v2(c)
    assert c.gpt_train.init_from is None and c.sovits_train.init_from is None and c.sovits_train.init_from_discriminator is None
    assert c.ssl.extractor == "hubert"  # the pretrained quantizer's feature space

    steps = [0, 20, 39, 40, 41, 100, 149, 150, 160, 170, 171, 220, 285, 399, 400, 1000]
    lrs = _lrs(c.gpt_train.optim, steps)
    for s, lr in zip(steps, lrs["gpt"]):
        assert lr == pytest.approx(_cosine(s, 1e-5, 40, 400, 1e-7, 1e-6), rel=1e-5), s
    for s, lr in zip(steps, lrs["gpt_frozen_bottom"]):  # zero until step 150, then its own schedule counted from 150
        assert lr == (0.0 if s < 150 else pytest.approx(_cosine(s - 150, 1e-5, 20, 250, 1e-7, 1e-6), rel=1e-5)), s
    assert lrs["gpt"][3] == pytest.approx(1e-5) and lrs["gpt"][-2] == pytest.approx(1e-6)
    assert c.gpt_train.optim.grad_accum_steps == 1  # optimizer steps are training steps

    steps = [0, 25, 50, 51, 425, 799, 800, 2000]
    g, d = _lrs(c.sovits_train.optim_g, steps), _lrs(c.sovits_train.optim_d, steps)
    for i, s in enumerate(steps):
        assert g["generator"][i] == pytest.approx(_cosine(s, 2e-4, 50, 800, 1e-6, 1e-5), rel=1e-5), s
        assert g["text_low_lr"][i] == pytest.approx(0.4 * g["generator"][i], rel=1e-6), s
        assert g["frozen"][i] == 0.0
        assert d["discriminator"][i] == pytest.approx(_cosine(s, 1e-4, 50, 800, 1e-6, 5e-6), rel=1e-5), s
    assert [grp.pattern for grp in c.sovits_train.optim_g.groups[:2]] == [
        "^(ssl_proj|quantizer)/",
        "^enc_p/(text_embedding|encoder_text|mrte)/",
    ]


def test_remat_needs_the_scanned_gpt_stack(repo_root):
    with pytest.raises(ConfigError, match=r"gpt_train\.remat: 'dots' needs gpt_train\.scan_layers: true"):
        load_config(repo_root / "configs/tiny.yaml", ["gpt_train.scan_layers=false", "gpt_train.remat=dots"])


def test_remat_needs_the_scanned_sovits_stacks(repo_root):
    with pytest.raises(ConfigError, match=r"sovits_train\.remat: 'full' needs sovits_train\.scan_layers: true"):
        load_config(repo_root / "configs/tiny.yaml", ["sovits_train.scan_layers=false", "sovits_train.remat=full"])
    c = load_config(repo_root / "configs/tiny.yaml", ["sovits_train.scan_layers=true", "sovits_train.remat=dots"])
    assert c.sovits_train.scan_layers and c.sovits_train.remat == "dots"
