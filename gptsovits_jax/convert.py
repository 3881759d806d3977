"""Names of upstream GPT-SoVITS v2 parameters in this project's parameter trees.

Upstream's PyTorch ``state_dict`` keys (``dec.resblocks.0.convs1.0.weight_v``) name the
same parameters as this project's Flax paths (``dec/resblocks_0/convs1_0/weight_v``)
by the rules of :mod:`gptsovits_jax.models.layers`:

* a ``ModuleList`` index joins the name before it: ``ups.0`` -> ``ups_0``,
  ``norm_layers_1.0`` -> ``norm_layers_1_0``;
* a plain ``weight`` is ``kernel`` (``embedding`` for ``nn.Embedding``); ``weight_g``,
  ``weight_v``, ``bias``, ``gamma``, ``beta`` and the relative embeddings keep their names;
* the reference encoder's one-child wrappers (``LinearNorm.fc``, ``ConvNorm.conv``) are
  flattened: ``ref_enc.spectral.0.fc.weight`` -> ``ref_enc/spectral_0/kernel``,
  ``ref_enc.temporal.0.conv1.conv.weight`` -> ``ref_enc/temporal_0/conv1/kernel``,
  ``ref_enc.fc.fc.weight`` -> ``ref_enc/fc/kernel``.

Paths are ``/``-joined strings, as ``flax.traverse_util.flatten_dict(tree, sep="/")`` gives.
Layout changes (transposes, the shape of ``weight_g``) and whole state dicts are handled by
:mod:`gptsovits_jax.upstream_weights`.
"""

from __future__ import annotations

import re

_EMBEDDINGS = ("text_embedding", "word_embeddings")
# Upstream module names that wrap a single layer in the reference encoder: dropped from the path.
_REF_ENC_WRAPPERS = re.compile(r"^ref_enc\.(spectral\.\d+\.fc|temporal\.\d+\.conv1\.conv|fc\.fc)\.")


def sovits_param_path(key: str) -> str:
    """The project path of an upstream SoVITS generator or discriminator parameter key.

    ``"dec.ups.0.weight_g"`` -> ``"dec/ups_0/weight_g"``;
    ``"ref_enc.temporal.1.conv1.conv.bias"`` -> ``"ref_enc/temporal_1/conv1/bias"``;
    ``"discriminators.3.convs.2.weight_v"`` -> ``"discriminators_3/convs_2/weight_v"``.
    """
    wrapper = _REF_ENC_WRAPPERS.match(key)
    if wrapper:
        inner = wrapper.group(1).rsplit(".", 1)[0]  # drop the wrapper's own attribute (fc / conv)
        key = f"ref_enc.{inner}.{key[wrapper.end() :]}"
    parts: list[str] = []
    for token in key.split("."):
        if token.isdigit() and parts:
            parts[-1] = f"{parts[-1]}_{token}"
        else:
            parts.append(token)
    if parts[-1] == "weight":
        parts[-1] = "embedding" if len(parts) > 1 and parts[-2] in _EMBEDDINGS else "kernel"
    return "/".join(parts)
