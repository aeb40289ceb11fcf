"""AdamW (or SGD + momentum) with linear warm-up + cosine decay (MAE App. A.1;
the recipe of every paper here, MoCo v2 uses SGD), lr = base_lr * batch / 256,
and no weight decay on norms, biases, position embeddings and special tokens.

The weight-decay mask (`decay_mask`) follows MAE / timm's
`param_groups_weight_decay`: arrays with ndim <= 1 (norm scales, biases) and
learned tokens / position tables (`NO_DECAY`, incl. Mobile-Former's global
`tokens`, treated as ViT's cls_token) are not decayed. Two config knobs:
`optim.decay_1d_params=True` decays every array (torch SGD's `weight_decay`
over `model.parameters()`, MoCo v2's official recipe);
`optim.no_decay_patterns` adds regexes over "/"-joined parameter paths.

Options any method config can use (DINO family): `weight_decay_end` (cosine
weight-decay schedule weight_decay -> weight_decay_end over training, DINO's
0.04 -> 0.4), `frozen` ((regex, epochs), ...: matching parameters get a zero
update, weight decay included, for the first `epochs` epochs: DINO's frozen
last layer), `clip_grad_mode` ("global": optax global norm; "per_param": each
array's gradient clipped to `clip_grad_norm` on its own, DINO's
`clip_gradients`).
"""
import functools
import math
import re

import jax
import jax.numpy as jnp
import optax

from ssl_jax import sharding
from ssl_jax.registry import check_choice

OPTIMIZERS = ("adamw", "sgd")

NO_DECAY = re.compile(
    r"pos_embedding|cls_token|mask_token|proxy_token|placeholder|(^|/)tokens$")
# Biases are matched by name too: the attention's per-head query / key / value
# biases are 2-D ([heads, head_dim]) but are timm's 1-D qkv bias.
BIAS = re.compile(r"(^|/)bias$")


def decay_mask(params, config=None):
  """True where weight decay applies; see the module docstring."""
  o = config.optim if config is not None else {}
  decay_1d = bool(o.get("decay_1d_params", False))
  extra = []
  for pattern in o.get("no_decay_patterns") or ():
    try:
      extra.append(re.compile(pattern))
    except re.error as e:
      raise ValueError(f"optim.no_decay_patterns: {pattern!r} is not a regular expression "
                       f"({e}); give regexes over '/'-joined parameter paths, e.g. "
                       "'head/linear_'.") from e

  def decays(path, p):
    name = sharding.path_str(path)
    if NO_DECAY.search(name) or any(r.search(name) for r in extra):
      return False
    return decay_1d or (p.ndim > 1 and not BIAS.search(name))
  return jax.tree_util.tree_map_with_path(decays, params)


def lr_schedule(config, total_steps: int, steps_per_epoch: int):
  o = config.optim
  peak = o.base_lr * config.batch_size / 256.0
  warmup = o.warmup_steps if o.get("warmup_steps") is not None else int(o.warmup_epochs * steps_per_epoch)
  warmup = max(0, min(int(warmup), total_steps - 1))
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=peak, warmup_steps=warmup,
      decay_steps=max(total_steps, warmup + 1), end_value=o.min_lr)


def weight_decay_schedule(config, total_steps: int):
  """Constant `weight_decay`, or a half cosine to `weight_decay_end` (DINO
  utils.cosine_scheduler, per iteration)."""
  o = config.optim
  base, end = o.weight_decay, o.get("weight_decay_end")
  if end is None:
    return base
  return lambda step: end + 0.5 * (base - end) * (
      1.0 + jnp.cos(math.pi * jnp.minimum(step / max(total_steps, 1), 1.0)))


def clip_per_param(max_norm: float) -> optax.GradientTransformation:
  """DINO utils.clip_gradients: each array's gradient scaled to norm <= max_norm."""
  def update(updates, state, params=None):
    del params
    def clip(g):
      norm = jnp.linalg.norm(g.reshape(-1).astype(jnp.float32))
      return g * jnp.minimum(1.0, max_norm / (norm + 1e-6)).astype(g.dtype)
    return jax.tree.map(clip, updates), state
  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def freeze_for(frozen, steps_per_epoch: int) -> optax.GradientTransformation:
  """Zero updates of parameters whose path matches a regex for its first epochs."""
  rules = [(re.compile(rx), int(round(float(ep) * steps_per_epoch))) for rx, ep in frozen]

  def until(path):
    name = sharding.path_str(path)
    return max([n for rx, n in rules if rx.search(name)], default=0)

  def init(params):
    return optax.ScaleByScheduleState(count=jnp.zeros((), jnp.int32))

  def update(updates, state, params=None):
    del params
    upd = jax.tree_util.tree_map_with_path(
        lambda path, u: jnp.where(state.count >= until(path), u, jnp.zeros_like(u)), updates)
    return upd, optax.ScaleByScheduleState(count=state.count + 1)
  return optax.GradientTransformation(init, update)


def make_optimizer(config, total_steps: int, steps_per_epoch: int):
  o = config.optim
  schedule = lr_schedule(config, total_steps, steps_per_epoch)
  parts = []
  if o.get("clip_grad_norm"):
    mode = check_choice("optim.clip_grad_mode", o.get("clip_grad_mode", "global"),
                        ("global", "per_param"))
    parts.append(optax.clip_by_global_norm(o.clip_grad_norm) if mode == "global"
                 else clip_per_param(o.clip_grad_norm))
  name = check_choice("optimizer (optim.name)", o.get("name", "adamw"), OPTIMIZERS)
  mask = functools.partial(decay_mask, config=config)
  wd = weight_decay_schedule(config, total_steps)
  if name == "adamw" and callable(wd):
    parts.append(optax.inject_hyperparams(optax.adamw, static_args=("mask",))(
        learning_rate=schedule, b1=o.b1, b2=o.b2, weight_decay=wd, mask=mask))
  elif name == "adamw":
    parts.append(optax.adamw(schedule, b1=o.b1, b2=o.b2, weight_decay=o.weight_decay,
                             mask=mask))
  else:
    if callable(wd):
      raise ValueError("optim.weight_decay_end (a weight-decay schedule) needs optim.name "
                       "'adamw'; SGD takes a constant weight_decay.")
    # Coupled L2 as in torch.optim.SGD (MoCo v2): decay enters the momentum.
    parts.append(optax.add_decayed_weights(o.weight_decay, mask=mask))
    parts.append(optax.sgd(schedule, momentum=o.momentum))
  if o.get("frozen"):
    # Last in the chain: the whole update (weight decay included) is zeroed.
    parts.append(freeze_for(o.frozen, steps_per_epoch))
  return optax.chain(*parts), schedule
