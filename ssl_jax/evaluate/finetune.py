"""End-to-end fine-tuning (002 App. A.1 Tab. S1; 000 App. B.1 Tab. 12): the
model (encoder + head), the paper recipes and the protocol "finetune".

The protocol runs as a job of the one trainer (`ssl_jax/protocol_jobs.py`,
method "finetune" in `methods/finetune.py`); the recipe pieces are there and
in `ops/batch_augment.py` (RandAugment, random erasing, Mixup / CutMix),
`optim.py` (AdamW, warm-up + cosine, layer-wise lr decay BEiT / MAE
`param_groups_lrd`: block i gets decay^(depth - i), the patch embedding /
tokens decay^(depth + 1), the rest 1; no weight decay on norms / biases /
tokens) and tf.data (RandomResizedCrop + flip per example).
Heads: linear on GAP of patch tokens or on CLS, or the tran-1 decoder
(000 Tab. 12), optionally initialised from a tran-1 probe ("probe": a
decoder_probe job first) or a saved probe head.

Deviations, named: timm ignores colour jitter when RandAugment is on, so
Tab. S1's "colorjitter 0.3" is not applied either; GAP pools the
final-LayerNorm tokens (MAE pools first, then applies fc_norm); those of
`ops/batch_augment.py`.
"""
from typing import Any, Dict

import flax.linen as nn
import jax
import jax.numpy as jnp

from ssl_jax import optim
from ssl_jax.evaluate import decoder_probe
from ssl_jax.registry import check_choice

# Layer-wise lr decay: ssl_jax/optim.py (shared with the fine-tuning job).
layer_decay_scales = optim.layer_decay_scales

# ----------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------

HEADS = ("linear", "tran1")
POOLS = ("gap", "cls")


class Classifier(nn.Module):
  """Encoder + head; params {"encoder": ..., "head": ...}."""
  encoder: nn.Module
  num_classes: int
  head: str = "linear"
  pool: str = "gap"
  decoder: Any = None           # Tran1Decoder kwargs (tuple of items) for head="tran1"

  @nn.compact
  def __call__(self, images, *, train: bool = False):
    out = self.encoder(images, train=train)
    if self.head == "tran1":
      fmap = out.get("feature_map")
      grid = tuple(fmap.shape[1:3]) if fmap is not None else None
      return decoder_probe.Tran1Decoder(**dict(self.decoder), name="head")(
          out["patch"], train=train, grid=grid)
    if self.pool == "cls":
      if out.get("cls") is None:
        raise ValueError("pool='cls' needs an encoder with a CLS token; use pool='gap'.")
      feat = out["cls"]
    else:
      feat = out["patch"].mean(axis=1)
    # MAE fine-tuning: head trunc_normal(std=2e-5), zero bias.
    return nn.Dense(self.num_classes, kernel_init=nn.initializers.truncated_normal(2e-5),
                    name="head")(feat)


def init_head(model: Classifier, enc_vars, images, rng):
  """Head params alone: the encoder is only traced for its output shapes."""
  out = jax.eval_shape(lambda v, x: model.encoder.apply(v, x, train=False), enc_vars, images)
  if model.head == "tran1":
    tokens = jnp.zeros(out["patch"].shape, jnp.float32)
    head = decoder_probe.Tran1Decoder(**dict(model.decoder))
    return jax.jit(head.init)(rng, tokens)["params"]
  feat = out["cls"] if model.pool == "cls" and out.get("cls") is not None else out["patch"]
  head = nn.Dense(model.num_classes, kernel_init=nn.initializers.truncated_normal(2e-5))
  return head.init(rng, jnp.zeros((1, feat.shape[-1]), jnp.float32))["params"]


def tab_s1() -> Dict[str, Any]:
  """002 App. A.1 Tab. S1 (ViT-Tiny on IN1K). Not in the table, from MAE-Lite's
  fine-tuning recipe: layer decay 0.85 (002 tunes it per model), min lr 1e-6,
  GAP (002 Sec. 3.1), random erasing 0."""
  return dict(head="linear", pool="gap", drop_path=0.0, epochs=300, warmup_epochs=5.0,
              batch_size=1024, base_lr=1e-3, min_lr=1e-6, b1=0.9, b2=0.999, weight_decay=0.05,
              layer_decay=0.85, label_smoothing=0.0, mixup=0.2, cutmix=0.0, randaug=(10, 0.5),
              random_erase=0.0, crop_scale=(0.08, 1.0), hflip=True, init_head=None,
              tran1=decoder_probe.tab11("mf285m"))


# 000 Tab. 12 per Mobile-Former size: (layer decay, epochs, mixup, cutmix).
TAB12_SIZES = {"mf285m": (0.90, 200, 0.0, 0.0), "mf1g": (0.90, 150, 0.2, 0.25),
               "mf3.7g": (0.85, 100, 0.8, 1.0)}


def tab12(size: str = "mf285m") -> Dict[str, Any]:
  """000 App. B.1 Tab. 12: encoder + tran-1 decoder initialised from tran-1
  probing (dropout 0.2 in the decoder)."""
  decay, epochs, mixup, cutmix = TAB12_SIZES[check_choice("fine-tune size", size, TAB12_SIZES)]
  tran1 = decoder_probe.tab11(size)
  tran1["dropout"] = 0.2
  return dict(head="tran1", pool="gap", drop_path=0.0, epochs=epochs, warmup_epochs=5.0,
              batch_size=512, base_lr=5e-4, min_lr=0.0, b1=0.9, b2=0.999, weight_decay=0.05,
              layer_decay=decay, label_smoothing=0.1, mixup=mixup, cutmix=cutmix,
              randaug=(9, 0.5), random_erase=0.25, crop_scale=(0.08, 1.0), hflip=True,
              init_head="probe", tran1=tran1)


def run(config, encoder, data, mesh) -> Dict[str, float]:
  """Protocol "finetune" as a trainer job (`protocol_jobs.run_finetune`):
  {"top1", "top5", "train_loss"}. `finetune.init_head`: None, "probe" (a
  tran-1 probe job first, the fine-tuning starts from its head, 000 App.
  B.1) or a decoder_probe job's workdir / a `decoder_probe.save_params` file."""
  check_choice("finetune.head", config.eval.finetune.head, HEADS)
  # Imported here: the trainer imports ssl_jax.evaluate.
  from ssl_jax import protocol_jobs  # pylint: disable=g-import-not-at-top
  return protocol_jobs.run_finetune(config, encoder, data, mesh)
