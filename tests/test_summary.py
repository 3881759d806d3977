"""`gptsovits-jax summary`: upstream v2 parameter counts, per top-level submodule."""

import json

from gptsovits_jax.cli import main
from gptsovits_jax.summary import parameter_counts

UPSTREAM_V2 = {
    "gpt": 77_606_402,
    "sovits": 51_310_080,
    "discriminator": 46_747_132,
}
UPSTREAM_V2_SOVITS = {
    "enc_p": 14_146_048,
    "dec": 14_662_144,
    "enc_q": 10_494_336,
    "flow": 10_260_096,
    "ref_enc": 567_040,
    "ssl_proj": 1_180_416,
}


def test_v2_counts_equal_upstream(v2_config):
    counts = parameter_counts(v2_config)
    assert {name: entry["total"] for name, entry in counts.items()} == UPSTREAM_V2
    assert counts["sovits"]["submodules"] == UPSTREAM_V2_SOVITS
    disc = counts["discriminator"]["submodules"]
    assert disc["discriminators_0"] == 5_641_362  # scale discriminator
    assert [disc[f"discriminators_{i}"] for i in range(1, 6)] == [8_221_154] * 5  # periods 2, 3, 5, 7, 11
    gpt = counts["gpt"]["submodules"]
    assert gpt["h"] == 24 * 3_152_384
    assert counts["sovits"]["buffers"]["quantizer"] == 1024 * 768 * 2 + 1024 + 1  # embed, embed_avg, cluster_size, inited


def test_summary_command_prints_json(repo_root, capsys):
    assert main(["summary", "--config", str(repo_root / "configs/v2.yaml"), "--json"]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert counts["sovits"]["submodules"]["dec"] == 14_662_144
    assert counts["gpt"]["total"] == 77_606_402
