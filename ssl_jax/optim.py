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
"""
import functools
import re

import jax
import optax

from ssl_jax import sharding
from ssl_jax.registry import check_choice

OPTIMIZERS = ("adamw", "sgd")

NO_DECAY = re.compile(
    r"pos_embedding|cls_token|mask_token|proxy_token|placeholder|(^|/)tokens$")


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
    return decay_1d or p.ndim > 1
  return jax.tree_util.tree_map_with_path(decays, params)


def lr_schedule(config, total_steps: int, steps_per_epoch: int):
  o = config.optim
  peak = o.base_lr * config.batch_size / 256.0
  warmup = o.warmup_steps if o.get("warmup_steps") is not None else int(o.warmup_epochs * steps_per_epoch)
  warmup = max(0, min(int(warmup), total_steps - 1))
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=peak, warmup_steps=warmup,
      decay_steps=max(total_steps, warmup + 1), end_value=o.min_lr)


def make_optimizer(config, total_steps: int, steps_per_epoch: int):
  o = config.optim
  schedule = lr_schedule(config, total_steps, steps_per_epoch)
  parts = []
  if o.get("clip_grad_norm"):
    parts.append(optax.clip_by_global_norm(o.clip_grad_norm))
  name = check_choice("optimizer (optim.name)", o.get("name", "adamw"), OPTIMIZERS)
  mask = functools.partial(decay_mask, config=config)
  if name == "adamw":
    parts.append(optax.adamw(schedule, b1=o.b1, b2=o.b2, weight_decay=o.weight_decay,
                             mask=mask))
  else:
    # Coupled L2 as in torch.optim.SGD (MoCo v2): decay enters the momentum.
    parts.append(optax.add_decayed_weights(o.weight_decay, mask=mask))
    parts.append(optax.sgd(schedule, momentum=o.momentum))
  return optax.chain(*parts), schedule
