"""AdamW (or SGD + momentum) with linear warm-up + cosine decay (MAE App. A.1;
the recipe of every paper here, MoCo v2 uses SGD), lr = base_lr * batch / 256,
and no weight decay on norms, biases, position embeddings and special tokens."""
import re

import jax
import optax

from ssl_jax import sharding
from ssl_jax.registry import check_choice

OPTIMIZERS = ("adamw", "sgd")

# Biases are matched by name too: the attention's per-head query / key / value
# biases are 2-D ([heads, head_dim]) but are timm's 1-D qkv bias, never decayed.
NO_DECAY = re.compile(r"pos_embedding|cls_token|mask_token|proxy_token|placeholder|(^|/)bias$")


def decay_mask(params):
  return jax.tree_util.tree_map_with_path(
      lambda path, p: p.ndim > 1 and not NO_DECAY.search(sharding.path_str(path)), params)


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
  if name == "adamw":
    parts.append(optax.adamw(schedule, b1=o.b1, b2=o.b2, weight_decay=o.weight_decay,
                             mask=decay_mask))
  else:
    # Coupled L2 as in torch.optim.SGD (MoCo v2): decay enters the momentum.
    parts.append(optax.add_decayed_weights(o.weight_decay, mask=decay_mask))
    parts.append(optax.sgd(schedule, momentum=o.momentum))
  return optax.chain(*parts), schedule
