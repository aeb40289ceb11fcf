"""Block-wise patch masks (BEiT Alg. 1, used by iBOT, DINOv2, SimMIM-style and SemanticMIM).

BEiT draws rectangles with area in [min_block, left] and log-uniform aspect
ratio in [0.3, 1/0.3] until the masked count reaches the target. Under `jit`
a data-dependent loop per image is awkward, so we draw a fixed number of
candidate rectangles, take their union in drawing order, and then fix the count
*exactly*: masked patches are chosen first inside the union (random order),
then, if the union is too small, at random outside it. Exact counts keep shapes
static (SemanticMIM's separate mask-token stream; MAE-style gathers) and match
BEiT in distribution except that the union may be cut at random when it
overshoots (BEiT cuts the last block instead).
"""
import math

import jax
import jax.numpy as jnp


def num_masked(num_tokens: int, ratio: float) -> int:
  if not 0.0 <= ratio < 1.0:
    raise ValueError(f"mask ratio must be in [0, 1), got {ratio}.")
  return int(round(num_tokens * ratio))


def _one_block_mask(rng, grid_hw, count, min_block, max_aspect, num_blocks):
  h, w = grid_hw
  k_area, k_aspect, k_top, k_left, k_rank = jax.random.split(rng, 5)
  # Block areas in [min_block, count] patches (BEiT: min_num_patches=16 at 14x14 grid).
  area = jax.random.uniform(k_area, (num_blocks,), minval=min_block,
                            maxval=jnp.maximum(jnp.float32(count), float(min_block)))
  log_aspect = jax.random.uniform(k_aspect, (num_blocks,),
                                  minval=-math.log(max_aspect), maxval=math.log(max_aspect))
  aspect = jnp.exp(log_aspect)
  bh = jnp.clip(jnp.round(jnp.sqrt(area * aspect)), 1, h)
  bw = jnp.clip(jnp.round(jnp.sqrt(area / aspect)), 1, w)
  top = jnp.floor(jax.random.uniform(k_top, (num_blocks,)) * (h - bh + 1))
  left = jnp.floor(jax.random.uniform(k_left, (num_blocks,)) * (w - bw + 1))
  rows = jnp.arange(h)[None, :, None]
  cols = jnp.arange(w)[None, None, :]
  inside = ((rows >= top[:, None, None]) & (rows < (top + bh)[:, None, None])
            & (cols >= left[:, None, None]) & (cols < (left + bw)[:, None, None]))
  return _union_exact(inside, count, k_rank)


def _union_exact(inside, count, k_rank):
  """[num_shapes, h, w] candidate shapes -> [h*w] mask with exactly `count` ones."""
  h, w = inside.shape[1:]
  # Union of blocks in drawing order, stopping once the target is reached
  # (later blocks only count while the running union is still short).
  def add(union, block):
    short = union.sum() < count
    return jnp.where(short, union | block, union), None
  union, _ = jax.lax.scan(add, jnp.zeros((h, w), bool), inside)
  union = union.reshape(-1)
  # Exact count: rank union patches first (random order within), then the rest.
  # `count` may be traced (per-image ratios), so select by rank, not by slicing.
  score = union.astype(jnp.float32) + jax.random.uniform(k_rank, union.shape) * 0.5
  rank = jnp.argsort(jnp.argsort(-score))
  return (rank < count).astype(jnp.float32)


def block_mask(rng, batch: int, grid_hw, ratio: float, *, min_block: int = 4,
               max_aspect: float = 1 / 0.3, num_blocks: int = 16) -> jnp.ndarray:
  """[B, h*w] float mask (1 = masked), exactly round(ratio * h * w) ones per row.

  `min_block`: smallest block in patches (BEiT: 16 on a 14x14 grid; 4 suits 8x8
  grids). `max_aspect`: BEiT's 1/0.3. `num_blocks`: candidate rectangles drawn.
  """
  h, w = grid_hw
  count = num_masked(h * w, ratio)
  rngs = jax.random.split(rng, batch)
  return jax.vmap(lambda r: _one_block_mask(r, (h, w), count, min_block, max_aspect,
                                            num_blocks))(rngs)


def block_mask_per_image_ratio(rng, batch: int, grid_hw, ratio_range, *, min_block: int = 4,
                               max_aspect: float = 1 / 0.3, num_blocks: int = 16):
  """iBOT / DINOv2: ratio drawn per image from `ratio_range` (iBOT: [0.1, 0.5]).
  Returns ([B, h*w] float mask with round(ratio_b * h * w) ones in row b, [B] ratios)."""
  h, w = grid_hw
  n = h * w
  lo, hi = ratio_range
  if not 0.0 <= lo <= hi < 1.0:
    raise ValueError(f"ratio_range must satisfy 0 <= lo <= hi < 1, got {ratio_range}.")
  k_ratio, k_mask = jax.random.split(rng)
  ratios = jax.random.uniform(k_ratio, (batch,), minval=lo, maxval=hi)
  counts = jnp.round(ratios * n).astype(jnp.int32)
  rngs = jax.random.split(k_mask, batch)
  masks = jax.vmap(lambda r, c: _one_block_mask(r, (h, w), c, min_block, max_aspect,
                                                num_blocks))(rngs, counts)
  return masks, ratios


def _one_cross_mask(rng, grid_hw, count, num_crosses):
  h, w = grid_hw
  k_r, k_c, k_ah, k_aw, k_rank = jax.random.split(rng, 5)
  r = jax.random.randint(k_r, (num_crosses,), 0, h)
  c = jax.random.randint(k_c, (num_crosses,), 0, w)
  # Arm half-lengths: 1 .. half the grid side (a 1-patch-thick "+").
  ah = jax.random.randint(k_ah, (num_crosses,), 1, max(h // 2, 1) + 1)
  aw = jax.random.randint(k_aw, (num_crosses,), 1, max(w // 2, 1) + 1)
  rows = jnp.arange(h)[None, :, None]
  cols = jnp.arange(w)[None, None, :]
  r, c, ah, aw = (x[:, None, None] for x in (r, c, ah, aw))
  vertical = (cols == c) & (jnp.abs(rows - r) <= ah)
  horizontal = (rows == r) & (jnp.abs(cols - c) <= aw)
  return _union_exact(vertical | horizontal, count, k_rank)


def cross_mask_per_image_ratio(rng, batch: int, grid_hw, ratio_range, *, num_crosses: int = 64):
  """Cross-wise masks of 001 Fig. 4 (its position masking): the union of
  random 1-patch-thick crosses ("+", random centre and arm lengths) in drawing
  order until round(ratio_b * h * w) patches, the count fixed exactly as in
  `block_mask`. Ratio per image from `ratio_range`. Returns ([B, h*w], [B])."""
  h, w = grid_hw
  lo, hi = ratio_range
  if not 0.0 <= lo <= hi < 1.0:
    raise ValueError(f"ratio_range must satisfy 0 <= lo <= hi < 1, got {ratio_range}.")
  k_ratio, k_mask = jax.random.split(rng)
  ratios = jax.random.uniform(k_ratio, (batch,), minval=lo, maxval=hi)
  counts = jnp.round(ratios * h * w).astype(jnp.int32)
  rngs = jax.random.split(k_mask, batch)
  masks = jax.vmap(lambda r, c: _one_cross_mask(r, (h, w), c, num_crosses))(rngs, counts)
  return masks, ratios
