"""The patch masks of the mask-token MIM family (SimMIM, MaskFeat, BEiT, SemanticMIM).

Every kind masks *exactly* round(ratio * N) patches per image, so the masked
set has a static size (SemanticMIM's separate mask-token stream gathers it):
- "random": uniformly random patches (003 Sec. 4.3: SemanticMIM and its
  reproduced baselines use random patch masking).
- "units": SimMIM Sec. 3.1 / Tab. 1: random masking of square mask units of
  `unit` x `unit` patches (mask-patch size 32 on 192 px with ViT-B/16: 2x2
  patches); the unit grid must tile the patch grid.
- "block": BEiT Alg. 1 block-wise masks (ssl_jax/ops/block_mask.py).
"""
import jax
import jax.numpy as jnp

from ssl_jax.ops import block_mask
from ssl_jax.registry import check_choice

KINDS = ("random", "units", "block")


def random_mask(rng, batch: int, num_tokens: int, ratio: float) -> jnp.ndarray:
  """[B, N] float mask (1 = masked) with exactly round(ratio * N) ones per row."""
  count = block_mask.num_masked(num_tokens, ratio)
  rank = jnp.argsort(jnp.argsort(jax.random.uniform(rng, (batch, num_tokens)), axis=1), axis=1)
  return (rank < count).astype(jnp.float32)


def unit_mask(rng, batch: int, grid_hw, ratio: float, unit: int) -> jnp.ndarray:
  """SimMIM: random mask over a coarse grid of unit x unit patches, upsampled."""
  h, w = grid_hw
  if unit < 1 or h % unit or w % unit:
    raise ValueError(f"mask unit {unit} (patches) must tile the {h}x{w} patch grid.")
  coarse = random_mask(rng, batch, (h // unit) * (w // unit), ratio)
  coarse = coarse.reshape(batch, h // unit, 1, w // unit, 1)
  return jnp.broadcast_to(coarse, (batch, h // unit, unit, w // unit, unit)).reshape(batch, h * w)


def draw(rng, batch: int, grid_hw, mask_cfg) -> jnp.ndarray:
  """[B, h*w] mask from a config node {kind, ratio, unit (units), min_block (block)}."""
  kind = check_choice("mask kind", mask_cfg["kind"], KINDS)
  h, w = grid_hw
  if kind == "random":
    return random_mask(rng, batch, h * w, mask_cfg["ratio"])
  if kind == "units":
    return unit_mask(rng, batch, grid_hw, mask_cfg["ratio"], mask_cfg["unit"])
  return block_mask.block_mask(rng, batch, grid_hw, mask_cfg["ratio"],
                               min_block=mask_cfg.get("min_block", 4))


def masked_count(grid_hw, mask_cfg) -> int:
  """The exact (static) number of masked patches `draw` returns per image."""
  h, w = grid_hw
  if mask_cfg["kind"] == "units":
    u = mask_cfg["unit"]
    return block_mask.num_masked((h // u) * (w // u), mask_cfg["ratio"]) * u * u
  return block_mask.num_masked(h * w, mask_cfg["ratio"])


def split_indices(mask: jnp.ndarray, count: int):
  """[B, N] mask with `count` ones per row -> (visible_idx [B, N-count],
  masked_idx [B, count]), each in ascending patch order."""
  order = jnp.argsort(mask, axis=1, stable=True)        # visible (0) first, in index order
  n = mask.shape[1]
  return order[:, :n - count], order[:, n - count:]
