"""iBOT (Zhou et al. 2022): DINO + masked image modelling with an online
tokenizer, the EMA teacher.

The student sees its global crops with block-wise masked patches (BEiT's
block masks, `ops.block_mask`), each global crop masked with probability
`dino.mask_prob` (0.5) at a ratio drawn per image from `dino.mask_ratio`
([0.1, 0.5]: iBOT's pred_ratio 0.3 +- 0.2); masked patch embeddings become
the ViT's learned mask token. The teacher sees the unmasked crops. Loss
(iBOT Eq. 2 + DINO's CLS loss, lambda1 = lambda2 = 1):
  L = L_[CLS] + L_MIM,  L_MIM = mean over images of the cross-entropy between
  the teacher's and the student's patch distributions on the masked patches,
with its own patch centre (EMA 0.9) and the CLS head shared with the patch
head by default (`dino.head_mode = "shared"`, iBOT's --shared_head) or
separate ("separate"). Everything else is the DINO engine (methods/dino.py).
"""
import jax

from ssl_jax.methods import METHODS, dino
from ssl_jax.methods.base import Method, fixed_view
from ssl_jax.ops import block_mask


def draw_block_masks(rng, batch: int, grid, config, prob=None):
  """[B, 2, N] block-wise masks: per global crop, masked with probability
  `prob` (default dino.mask_prob) at a ratio from dino.mask_ratio."""
  d = config.dino
  prob = d.mask_prob if prob is None else prob
  k_mask, k_apply = jax.random.split(rng)
  masks, _ = block_mask.block_mask_per_image_ratio(
      k_mask, batch * 2, grid, tuple(d.mask_ratio), min_block=d.mask_min_block)
  apply = jax.random.uniform(k_apply, (batch * 2, 1)) < prob
  return (masks * apply).reshape(batch, 2, -1)


def draw_masks(rng, batch, grid, config):
  return draw_block_masks(rng, batch, grid, config), None


METHODS.register("ibot", Method(views=fixed_view("multi_crop"), init=dino.init,
                                loss=dino.make_loss(draw_masks=draw_masks),
                                encoder=dino.encoder, update=dino.update))
