"""The README's Python example runs as written."""

import re

import jax.numpy as jnp


def test_readme_schedule_and_optimizer_example_runs(repo_root):
    text = (repo_root / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "README has no Python example"
    params = {
        "ssl_proj": {"kernel": jnp.ones((2, 4, 4))},
        "enc_p": {"text_embedding": {"embedding": jnp.ones((5, 4))}, "proj": {"kernel": jnp.ones((4, 8))}},
        "dec": {"conv_post": {"kernel": jnp.ones((7, 4, 1))}},
    }
    grads = {k: v for k, v in params.items()}
    namespace = {"params": params, "grads": grads}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    lrs = namespace["opt"].current_learning_rates(namespace["state"])
    assert set(lrs) == {"frozen", "text_low_lr", "generator"}
    assert float(lrs["frozen"]) == 0.0 and float(lrs["text_low_lr"]) > 0
