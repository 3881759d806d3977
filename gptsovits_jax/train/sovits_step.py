"""Stage 2: the SoVITS GAN train step, in upstream's order, as one compiled function.

One call of :func:`sovits_train_step` does what upstream's ``s2_train.py`` does per
iteration:

1. generator forward (one forward pass; its VJP is kept for step 6);
2. discriminator loss on real audio vs the **detached** generated audio;
3. discriminator update;
4. discriminator run again with the **updated** parameters on real and generated audio;
5. generator loss: ``c_mel * mel L1 + c_kl * KL + c_fm * feature matching + adversarial + c_commit * commitment``;
6. generator update (gradients through the VJP of step 1).

The quantizer's codebook (EMA, k-means init) lives in its own variable
collection and changes only when the quantizer is trained and the step's
gradients are finite. Batches (channels-last, 50 Hz frames ``T``, even):

- ``ssl`` ``[B, T, ssl_dim]`` content features; ``spec`` ``[B, T, n_fft/2+1]`` linear spectrogram;
  ``spec_lens`` ``[B]`` valid frames;
- ``wav`` ``[B, T * hop]`` 32 kHz waveform (zero beyond ``spec_lens * hop``);
- ``text`` ``[B, L]`` phoneme ids, ``text_lens`` ``[B]``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from gptsovits_jax import audio, losses
from gptsovits_jax.config import Config
from gptsovits_jax.models.hifigan import MultiPeriodDiscriminator
from gptsovits_jax.models.sovits import SynthesizerTrn, build_synthesizer, slice_segments
from gptsovits_jax.optim import Optimizer, build_optimizer, skipped_updates
from gptsovits_jax.train.common import COMPUTE_DTYPES, init_key, jit_step, lr_metrics, tree_is_finite


@flax.struct.dataclass
class SoVITSTrainState:
    """Everything that changes during stage-2 training (a pytree; checkpointed whole).

    ``rng`` is the run's base key: step ``s`` uses ``fold_in(rng, s)``, so a resumed
    run draws the same numbers as an uninterrupted one.
    """

    step: jax.Array
    params_g: Any
    params_d: Any
    opt_state_g: Any
    opt_state_d: Any
    quantizer: Any
    rng: jax.Array
    validation_loss: jax.Array
    validation_round: jax.Array


@dataclasses.dataclass(frozen=True)
class SoVITSSetup:
    """The static parts of stage 2: modules, optimizers and loss weights (not checkpointed)."""

    synth: SynthesizerTrn
    disc: MultiPeriodDiscriminator
    opt_g: Optimizer
    opt_d: Optimizer
    config: Config

    @property
    def train_quantizer(self) -> bool:
        return not self.config.sovits.freeze_quantizer


def example_sovits_batch(config: Config, batch_size: int, frames: int, text_len: int) -> dict[str, jax.Array]:
    """A zero batch with the shapes of a real one (for initialisation and compilation)."""
    a = config.audio
    return {
        "ssl": jnp.zeros((batch_size, frames, config.ssl.dim), jnp.float32),
        "spec": jnp.zeros((batch_size, frames, a.spec_channels), jnp.float32),
        "spec_lens": jnp.full((batch_size,), frames, jnp.int32),
        "wav": jnp.zeros((batch_size, frames * a.hop_length), jnp.float32),
        "text": jnp.zeros((batch_size, text_len), jnp.int32),
        "text_lens": jnp.full((batch_size,), text_len, jnp.int32),
    }


def sovits_synthesizer(config: Config) -> SynthesizerTrn:
    """The generator module as training runs it (``sovits_train``'s compute precision, layer scan and remat); inference uses the same."""
    train = config.sovits_train
    return build_synthesizer(config, dtype=COMPUTE_DTYPES[train.precision], scan_layers=train.scan_layers, remat=train.remat)


def make_sovits_setup(config: Config, params_g: Any, params_d: Any) -> SoVITSSetup:
    """Modules and optimizers for ``config`` (params may be abstract ``ShapeDtypeStruct`` s)."""
    dtype = COMPUTE_DTYPES[config.sovits_train.precision]
    synth = sovits_synthesizer(config)
    disc = MultiPeriodDiscriminator(config.discriminator, dtype=dtype)
    steps = config.sovits_train.steps
    opt_g = build_optimizer(config.sovits_train.optim_g, params_g, total_steps=steps)
    opt_d = build_optimizer(config.sovits_train.optim_d, params_d, total_steps=steps)
    return SoVITSSetup(synth=synth, disc=disc, opt_g=opt_g, opt_d=opt_d, config=config)


def init_sovits_variables(config: Config, rng: jax.Array) -> tuple[Any, Any, Any]:
    """``(params_g, quantizer_state, params_d)`` for ``config``, initialised from ``rng``.

    Every module runs once on its shortest input (one hop of audio for the discriminator),
    which creates the same variables as the training forward at a fraction of its compile time.
    """
    synth = build_synthesizer(config)
    disc = MultiPeriodDiscriminator(config.discriminator)
    k_g, k_d, k_s, k_drop = jax.random.split(rng, 4)
    variables = synth.init({"params": k_g, "sample": k_s, "dropout": k_drop}, method=SynthesizerTrn.create_variables)
    params_d = disc.init(k_d, jnp.zeros((1, config.audio.hop_length), jnp.float32))["params"]
    return variables["params"], variables.get("quantizer", {}), params_d


def create_sovits_state(config: Config, seed: int | None = None, variables: Any = None) -> tuple[SoVITSTrainState, SoVITSSetup]:
    """A fresh train state and its setup, deterministic in ``seed`` (default ``sovits_train.seed``).

    ``variables``: ``(params_g, quantizer, params_d)`` to start from (e.g. imported weights) instead of
    a fresh initialisation; the optimizer state is fresh either way.
    """
    seed = config.sovits_train.seed if seed is None else seed
    if variables is None:
        variables = jax.jit(init_sovits_variables, static_argnums=0)(config, init_key(seed))
    params_g, quantizer, params_d = variables
    run_key = jax.random.PRNGKey(seed)
    setup = make_sovits_setup(config, params_g, params_d)
    state = SoVITSTrainState(
        step=jnp.zeros((), jnp.int32),
        params_g=params_g,
        params_d=params_d,
        opt_state_g=setup.opt_g.tx.init(params_g),
        opt_state_d=setup.opt_d.tx.init(params_d),
        quantizer=quantizer,
        rng=run_key,
        validation_loss=jnp.full((), jnp.inf, jnp.float32),
        validation_round=jnp.zeros((), jnp.int32),
    )
    return state, setup


@flax.struct.dataclass
class SoVITSGradients:
    """Everything one iteration computes before the generator update (see :func:`sovits_gradients`)."""

    grads_g: Any
    grads_d: Any
    params_d: Any
    opt_state_d: Any
    quantizer: Any
    loss_g: jax.Array
    loss_d: jax.Array
    terms: dict[str, jax.Array]
    audio_fake: jax.Array


def sovits_gradients(setup: SoVITSSetup, state: SoVITSTrainState, batch: dict[str, jax.Array], rng: jax.Array) -> SoVITSGradients:
    """Steps 1-5 of the module docstring: the discriminator update and the generator's gradients.

    Returned separately from :func:`sovits_train_step` so tests can inspect gradients.
    """
    cfg = setup.config
    tc = cfg.sovits_train
    hop = cfg.audio.hop_length
    seg_frames = cfg.sovits.segment_frames
    k_drop, k_sample, k_drop_d = jax.random.split(rng, 3)

    # 1. Generator forward, keeping its VJP. Integer outputs and the codebook go to aux.
    def generator_forward(params_g):
        out, mutated = setup.synth.apply(
            {"params": params_g, "quantizer": state.quantizer},
            batch["ssl"],
            batch["spec"],
            batch["spec_lens"],
            batch["text"],
            batch["text_lens"],
            train=True,
            update_codebook=setup.train_quantizer,
            rngs={"dropout": k_drop, "sample": k_sample},
            mutable=["quantizer"],
        )
        diff = {"audio": out.audio, "z_p": out.z_p, "logs_q": out.logs_q, "m_p": out.m_p, "logs_p": out.logs_p, "commit": out.commit_loss}
        aux = {"ids_slice": out.ids_slice, "mask": out.mask, "quantizer": mutated.get("quantizer", state.quantizer)}
        return diff, aux

    gen, g_vjp, aux = jax.vjp(generator_forward, state.params_g, has_aux=True)
    y_hat = gen["audio"].astype(jnp.float32)
    n = y_hat.shape[0]
    y = slice_segments(batch["wav"], aux["ids_slice"] * hop, seg_frames * hop)
    mel_real = slice_segments(audio.spec_to_mel(batch["spec"], cfg.audio), aux["ids_slice"], seg_frames)

    def discriminate(params_d, fake):
        return setup.disc.apply({"params": params_d}, jnp.concatenate([y, fake], axis=0), rngs={"dropout": k_drop_d})

    # 2-3. Discriminator loss on real vs detached fake; update.
    def disc_loss_fn(params_d):
        logits, _ = discriminate(params_d, jax.lax.stop_gradient(y_hat))
        total, _, _ = losses.discriminator_loss([x[:n] for x in logits], [x[n:] for x in logits])
        return total

    loss_d, grads_d = jax.value_and_grad(disc_loss_fn)(state.params_d)
    updates_d, opt_state_d = setup.opt_d.tx.update(grads_d, state.opt_state_d, state.params_d, **_plateau_args(state))
    params_d = optax.apply_updates(state.params_d, updates_d)

    # 4-5. Generator loss with the updated discriminator, as a function of the generator outputs.
    def gen_loss_fn(gen_out):
        fake = gen_out["audio"].astype(jnp.float32)
        logits, fmaps = discriminate(params_d, fake)
        terms = {
            "mel": losses.mel_l1_loss(mel_real, audio.mel_spectrogram(fake, cfg.audio)),
            "kl": losses.kl_loss(gen_out["z_p"], gen_out["logs_q"], gen_out["m_p"], gen_out["logs_p"], aux["mask"]),
            "fm": losses.feature_matching_loss([[f[:n] for f in layer] for layer in fmaps], [[f[n:] for f in layer] for layer in fmaps]),
            "gen": losses.generator_adversarial_loss([x[n:] for x in logits]),
            "commit": gen_out["commit"].astype(jnp.float32),
        }
        total = tc.c_mel * terms["mel"] + tc.c_kl * terms["kl"] + tc.c_fm * terms["fm"] + terms["gen"] + tc.c_commit * terms["commit"]
        return total, terms

    (loss_g, terms), gen_cotangent = jax.value_and_grad(gen_loss_fn, has_aux=True)(gen)
    (grads_g,) = g_vjp(gen_cotangent)
    return SoVITSGradients(
        grads_g=grads_g,
        grads_d=grads_d,
        params_d=params_d,
        opt_state_d=opt_state_d,
        quantizer=aux["quantizer"],
        loss_g=loss_g,
        loss_d=loss_d,
        terms=terms,
        audio_fake=y_hat,
    )


def sovits_train_step(
    setup: SoVITSSetup, state: SoVITSTrainState, batch: dict[str, jax.Array], rng: jax.Array
) -> tuple[SoVITSTrainState, dict[str, jax.Array]]:
    """One GAN iteration (module docstring). Pure: ``(state, batch, rng) -> (state, metrics)``."""
    tc = setup.config.sovits_train
    g = sovits_gradients(setup, state, batch, rng)
    # 6. Generator update through the forward pass's VJP.
    updates_g, opt_state_g = setup.opt_g.tx.update(g.grads_g, state.opt_state_g, state.params_g, **_plateau_args(state))
    params_g = optax.apply_updates(state.params_g, updates_g)
    # A non-finite step changes no parameter (apply_if_finite) and no codebook statistic either.
    finite = (
        tree_is_finite(setup.opt_g.stacked(g.grads_g))
        & tree_is_finite(setup.opt_d.stacked(g.grads_d))
        & jnp.isfinite(g.loss_g)
        & jnp.isfinite(g.loss_d)
    )
    quantizer = jax.tree.map(lambda new, old: jnp.where(finite, new, old), g.quantizer, state.quantizer)
    new_state = state.replace(
        step=state.step + 1, params_g=params_g, params_d=g.params_d, opt_state_g=opt_state_g, opt_state_d=g.opt_state_d, quantizer=quantizer
    )
    metrics = {
        "loss/g/total": g.loss_g,
        "loss/g/mel": g.terms["mel"] * tc.c_mel,
        "loss/g/kl": g.terms["kl"] * tc.c_kl,
        "loss/g/fm": g.terms["fm"] * tc.c_fm,
        "loss/g/gen": g.terms["gen"],
        "loss/g/commit": g.terms["commit"] * tc.c_commit,
        "loss/d/total": g.loss_d,
        "grad_norm/g": setup.opt_g.global_norm(g.grads_g),
        "grad_norm/d": setup.opt_d.global_norm(g.grads_d),
        "skipped/g": skipped_updates(opt_state_g),
        "skipped/d": skipped_updates(g.opt_state_d),
        **lr_metrics(setup.opt_g, opt_state_g),
        **lr_metrics(setup.opt_d, g.opt_state_d),
    }
    return new_state, metrics


def _plateau_args(state: SoVITSTrainState) -> dict[str, jax.Array]:
    return {"validation_loss": state.validation_loss, "validation_round": state.validation_round}


def resynthesize(synth: SynthesizerTrn, params_g: Any, quantizer: Any, batch: dict[str, jax.Array]) -> jax.Array:
    """Whole utterances resynthesised from their own content and reference: ``[B, T_spec * hop]`` samples at 32 kHz.

    ``SynthesizerTrn.infer_full`` on the batch's ``ssl``, ``spec``, ``spec_lens``, ``text``
    and ``text_lens`` with the fixed noise key 0, so the same parameters give the same audio.
    Samples past ``spec_lens * hop`` of a row are padding.
    """
    return synth.apply(
        {"params": params_g, "quantizer": quantizer},
        batch["ssl"],
        batch["spec"],
        batch["spec_lens"],
        batch["text"],
        batch["text_lens"],
        rng=jax.random.PRNGKey(0),
        method=SynthesizerTrn.infer_full,
    )


def sovits_eval_step(setup: SoVITSSetup, state: SoVITSTrainState, batch: dict[str, jax.Array], rng: jax.Array) -> dict[str, jax.Array]:
    """Validation losses of one batch (no parameter or codebook change).

    ``val/mel`` is the mel L1 (times ``c_mel``) of whole utterances synthesised from
    their own content and reference (prior sample at noise scale 0.5, flow reversed,
    decoded at full length), over valid frames; ``val/kl`` and ``val/mel_slice`` come
    from the training forward on random slices without dropout. Rows where the
    optional ``valid [B]`` is false (filler rows of the last eval batch) do not count.
    """
    cfg = setup.config
    c_mel = cfg.sovits_train.c_mel
    inputs = (batch["ssl"], batch["spec"], batch["spec_lens"], batch["text"], batch["text_lens"])
    rows = batch["valid"].astype(jnp.float32) if "valid" in batch else jnp.ones(batch["spec_lens"].shape, jnp.float32)
    variables = {"params": state.params_g, "quantizer": state.quantizer}
    out = setup.synth.apply(variables, *inputs, train=False, rngs={"sample": rng})
    mel_real = audio.spec_to_mel(batch["spec"], cfg.audio)
    slice_err = jnp.abs(
        slice_segments(mel_real, out.ids_slice, cfg.sovits.segment_frames) - audio.mel_spectrogram(out.audio.astype(jnp.float32), cfg.audio)
    )
    full = setup.synth.apply(variables, *inputs, rng=rng, method=SynthesizerTrn.infer_full)
    mel_full = audio.mel_spectrogram(full.astype(jnp.float32), cfg.audio)
    frames = min(mel_full.shape[1], mel_real.shape[1])
    mask = (jnp.arange(frames)[None, :] < batch["spec_lens"][:, None]).astype(jnp.float32) * rows[:, None]
    full_err = jnp.abs(mel_full[:, :frames] - mel_real[:, :frames]).mean(-1)
    row_count = jnp.maximum(jnp.sum(rows), 1.0)
    return {
        "val/mel": c_mel * jnp.sum(full_err * mask) / jnp.maximum(jnp.sum(mask), 1.0),
        "val/mel_slice": c_mel * jnp.sum(slice_err.mean(axis=(1, 2)) * rows) / row_count,
        "val/kl": losses.kl_loss(out.z_p, out.logs_q, out.m_p, out.logs_p, out.mask * rows[:, None]),
        "val/rows": jnp.sum(rows),
    }


def jit_sovits_train_step(setup: SoVITSSetup, state_sharding: Any = None, batch_sharding: Any = None, *, rng_from_state: bool = False):
    """``sovits_train_step`` compiled for ``setup`` with the state donated (:func:`~gptsovits_jax.train.common.jit_step`).

    With shardings (from :mod:`gptsovits_jax.train.parallel`), the same function
    runs data-parallel: state replicated, batch split along its leading axis.
    """
    return jit_step(functools.partial(sovits_train_step, setup), state_sharding, batch_sharding, rng_from_state=rng_from_state)
