"""Configs for the training tests: the tiny config shrunk further where compile time matters."""

import pytest

from gptsovits_jax.config import load_config

# Fewer and narrower layers than configs/tiny.yaml: same code paths, a fraction of the compile time.
SMALL_SOVITS = [
    "sovits.hidden_channels=16",
    "sovits.inter_channels=16",
    "sovits.filter_channels=32",
    "sovits.n_layers=1",
    "sovits.gin_channels=16",
    "sovits.ref_hidden=16",
    "sovits.mrte_hidden=16",
    "sovits.posterior_layers=1",
    "sovits.flow_layers=1",
    "sovits.n_flows=1",
    "sovits.upsample_initial_channel=32",
    "sovits.resblock_kernel_sizes=[3]",
    "sovits.resblock_dilation_sizes=[[1]]",
    "sovits.segment_frames=8",
    "sovits.codebook_size=16",
    "gpt.vocab_size=17",
    "discriminator.periods=[2, 3]",
    "discriminator.period_channels=[4, 8, 8]",
    "discriminator.scale_channels=[4, 8, 8]",
    "discriminator.scale_groups=[1, 2, 2]",
    "sovits_train.batch_size=2",
    "sovits_train.steps=100",
]


@pytest.fixture(scope="session")
def small_sovits_config(repo_root):
    return load_config(repo_root / "configs/tiny.yaml", SMALL_SOVITS)
