"""The method interface: a pretext method is a record of pure functions.

The trainer calls only these; it never asks which method it is running.

- `views(config) -> str`: the view builder (ssl_jax/data/views.py) whose
  output dict the loss consumes (e.g. "single_crop", "two_crops").
- `init(rng, batch, config) -> MethodVars`: trainable `params`, checkpointed
  non-trainable `state` (EMA teacher, BN statistics, centres, ...) and
  `constants` (a frozen teacher loaded from disk: never trained, never
  written into checkpoints, re-loaded on resume).
- `loss(params, state, constants, batch, rng, step, config)`
  -> `(loss, (metrics, new_state))`, pure.
- `update(state, params, step, config) -> state`: after the optimizer step
  (EMA / momentum teachers); identity by default.
- `encoder(config) -> EncoderSpec`: how to rebuild the backbone for
  evaluation and export, and which variables it takes from (params, state).
  None: nothing to export (a linear probe's encoder is its frozen input).
- `predict(params, state, constants, batch, config) -> logits [B, C]`
  (optional): a classifier objective (linear probe, fine-tuning); the
  trainer then scores the eval split with it (top-1 / top-5, `ssl_jax/validate.py`).
"""
import dataclasses
from typing import Any, Callable, Dict, NamedTuple, Optional

import jax.numpy as jnp

Pytree = Any


class MethodVars(NamedTuple):
  params: Pytree
  state: Pytree
  constants: Pytree


@dataclasses.dataclass(frozen=True)
class EncoderSpec:
  model: Dict[str, Any]                       # `ssl_jax.models.build` config
  variables: Callable[[Pytree, Pytree], Dict[str, Pytree]]  # (params, state) -> flax variables


def fixed_view(name: str) -> Callable[[Any], str]:
  """`views` of a method that always consumes the same view builder."""
  return lambda config: name


def encoder_params(params, state):
  """`EncoderSpec.variables` of a method whose backbone is `params["encoder"]`
  with no other collections (no BatchNorm statistics)."""
  del state
  return {"params": params["encoder"]}


def no_update(state, params, step, config):
  del params, step, config
  return state


@dataclasses.dataclass(frozen=True)
class Method:
  views: Callable[[Any], str]
  init: Callable[..., MethodVars]
  loss: Callable[..., Any]
  encoder: Optional[Callable[[Any], EncoderSpec]]
  update: Callable[..., Pytree] = no_update
  predict: Optional[Callable[..., Any]] = None


def scalar_metrics(**kw) -> Dict[str, jnp.ndarray]:
  return {k: jnp.asarray(v, jnp.float32) for k, v in kw.items()}
