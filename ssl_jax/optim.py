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

Evaluation jobs (linear probe, fine-tuning): `name="lars"` is MAE's LARS
(util/lars.py, the linear-probe optimizer) and `layer_decay` (< 1) scales
each parameter's update by BEiT / MAE's layer-wise lr decay (`param_groups_lrd`).
"""
import functools
import math
import re

import jax
import jax.numpy as jnp
import optax

from ssl_jax import sharding
from ssl_jax.registry import check_choice

OPTIMIZERS = ("adamw", "sgd", "lars")

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


def lars(lr, weight_decay: float = 0.0, momentum: float = 0.9,
         trust_coefficient: float = 0.001) -> optax.GradientTransformation:
  """MAE's util/lars.py: weight decay and the trust ratio apply only to arrays
  with ndim > 1 (a head's bias takes plain momentum SGD), and the lr scales the
  momentum buffer's step (torch style), not each gradient before the momentum
  as optax.lars does; the two differ while the lr changes (warm-up, cosine)."""
  matrices = lambda params: jax.tree.map(lambda p: p.ndim > 1, params)
  return optax.chain(
      optax.masked(optax.add_decayed_weights(weight_decay), matrices),
      optax.masked(optax.scale_by_trust_ratio(trust_coefficient=trust_coefficient), matrices),
      optax.trace(decay=momentum), optax.scale_by_learning_rate(lr))


# Layer-wise lr decay: the block index is read from the param path `block{i}`;
# embeddings are ViT patch embedding / prefix (CLS, proxy) and mask tokens,
# CNN stems, Mobile-Former's global tokens.
_BLOCK = re.compile(r"(?:^|/)block_?(\d+)(?:/|$)")
_EMBED = re.compile(r"patch_embed|cls_token|proxy_tokens|mask_token|pos_embedding|stem|register"
                    r"|(?:^|/)tokens$")


def layer_decay_scales(params, decay: float, encoder_key: str = "encoder"):
  """Tree of lr multipliers (MAE `param_groups_lrd`): with L blocks, layer id
  0 = embeddings, i+1 = block i, L+1 = everything else; scale decay^(L+1-id).
  Only paths under `encoder_key` decay; encoders without `block{i}` params get
  no decay."""
  paths = [sharding.path_str(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
  blocks = {int(m.group(1)) for p in paths for m in [_BLOCK.search(p)] if m}
  num = max(blocks) + 1 if blocks else 0

  def scale(path, _):
    if not num or decay == 1.0:
      return 1.0
    name = sharding.path_str(path)
    in_encoder = name.split("/")[0] == encoder_key
    m = _BLOCK.search(name)
    if in_encoder and m:
      layer = int(m.group(1)) + 1
    elif in_encoder and _EMBED.search(name):
      layer = 0
    else:
      layer = num + 1
    return float(decay ** (num + 1 - layer))
  return jax.tree_util.tree_map_with_path(scale, params)


def scale_by_tree(scales) -> optax.GradientTransformation:
  """Multiplies each update by a fixed per-leaf scale (a tree like the params)."""
  return optax.GradientTransformation(
      lambda params: optax.EmptyState(),
      lambda updates, state, params=None: (jax.tree.map(lambda u, s: u * s, updates, scales), state))


def scale_by_layer_decay(decay: float) -> optax.GradientTransformation:
  """`scale_by_tree(layer_decay_scales(...))` with the scales read from the
  updates' own paths (static), so the optimizer is built before the params."""
  return optax.GradientTransformation(
      lambda params: optax.EmptyState(),
      lambda updates, state, params=None: (jax.tree.map(
          lambda u, s: u * s, updates, layer_decay_scales(updates, decay)), state))


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
  elif name == "lars":
    if callable(wd):
      raise ValueError("optim.weight_decay_end (a weight-decay schedule) needs optim.name "
                       "'adamw'; LARS takes a constant weight_decay.")
    parts.append(lars(schedule, o.weight_decay, o.momentum))
  else:
    if callable(wd):
      raise ValueError("optim.weight_decay_end (a weight-decay schedule) needs optim.name "
                       "'adamw'; SGD takes a constant weight_decay.")
    # Coupled L2 as in torch.optim.SGD (MoCo v2): decay enters the momentum.
    parts.append(optax.add_decayed_weights(o.weight_decay, mask=mask))
    parts.append(optax.sgd(schedule, momentum=o.momentum))
  if o.get("layer_decay") is not None and float(o.layer_decay) != 1.0:
    parts.append(scale_by_layer_decay(float(o.layer_decay)))
  if o.get("frozen"):
    # Last in the chain: the whole update (weight decay included) is zeroed.
    parts.append(freeze_for(o.frozen, steps_per_epoch))
  return optax.chain(*parts), schedule
