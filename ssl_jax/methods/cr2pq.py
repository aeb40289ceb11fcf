"""CR2PQ: continuous relative rotary positional query (004, Sec. 3.2).

Two crops A and B of one image. The student encodes A with continuous 2D RoPE
in every self-attention (Eq. 5-7); view B's patch positions, expressed in A's
patch grid (Eq. 3-4), rotate a learnable placeholder that cross-attends to A's
tokens (Eq. 8); a light decoder then predicts the teacher's patch embeddings
of B (Eq. 9), and a projector of A's mean token predicts the teacher's mean
token of B (Eq. 10). No correspondence is mined: crops may contain, overlap or
miss each other.

Teachers (Tab. 4, `cr2pq.teacher`): "ema" (momentum copy of the student, in
`state`), "frozen" (an ssl_jax export, a timm / MAE / DINO ViT checkpoint or a
torchvision-layout DINO / SimCLR ResNet-50 `.pth`, in `constants`) and
"pixels" (patchified view B). The query grid K_B is the teacher's token grid
(Sec. 4.2: 7x7 for a ResNet-50 teacher), unless `cr2pq.query_grid` asks for
another, to which the teacher's tokens are resampled.

Position ablations (Tab. 6, `cr2pq.pos_encoding`): the "discrete" variants
cannot relate two crops, so, as the paper does, they degenerate to masked
prediction on one view (75% masked, queries at the masked grid positions).
"""
import dataclasses
import functools
import math
from typing import Callable

import jax
import jax.numpy as jnp

from ssl_jax import interop, models
from ssl_jax.methods import METHODS
from ssl_jax.methods.base import (EncoderSpec, Method, MethodVars, encoder_params,
                                  fixed_view, scalar_metrics)
from ssl_jax.models import cr2pq_heads, layers
from ssl_jax.ops import ema, masking, patches, posemb, rope
from ssl_jax.registry import Registry, check_choice


@dataclasses.dataclass(frozen=True)
class PosEncoding:
  encoder_posemb: str   # ViT `posemb` of the student
  query_pos: str        # cr2pq_heads.QUERY_POSITIONS
  cross_view: bool      # queries at view B's relative coordinates (else masked A)


# 004 Tab. 6, best first. "learnable" uses the ViT's learnt table in the
# encoder (the paper's coordinate MLP there needs a ViT hook; see config docs).
POS_ENCODINGS = {
    "rope_continuous": PosEncoding("rope", "rope", True),
    "rope_discrete": PosEncoding("rope", "rope", False),
    "sincos_continuous": PosEncoding("sincos2d", "sincos", True),
    "learnable": PosEncoding("learn", "mlp", True),
    "sincos_discrete": PosEncoding("sincos2d", "sincos", False),
}
COORD_ANCHORS = ("centre", "corner")


def _pair(grid):
  return (grid, grid) if isinstance(grid, int) else tuple(grid)


def relative_coordinates(box_a, box_b, grid_a, grid_b, anchor: str = "centre"):
  """View B's patch positions in view A's patch grid (004 Eq. 3-4, Listing 1).

  box_a, box_b: [4] (top, left, height, width) in original-image pixels; a
  horizontally flipped view has `signed_box` (left edge at its right, negative
  width). grid_a, grid_b: patches per side (int or (rows, cols)).
  Returns [rows_b, cols_b, 2] (row, col) in units of one patch of A, origin at
  A's top-left patch: equal boxes and grids give exactly A's integer grid.

  Each patch stands for one point of the original image: its centre
  (anchor "centre") or its top-left corner in the original image ("corner",
  Eq. 4 / Listing 1 literally; differs by (scale - 1) / 2 patches). A patch of
  a flipped view covers the mirrored pixels, so with "corner" its point is
  the patch's *right* edge in view coordinates (fraction 1, not 0, of its
  signed extent); view A's integer grid is anchored the same way. A flipped
  crop's coordinates are then the mirrored unflipped ones for both anchors.
  """
  check_choice("CR2PQ coordinate anchor", anchor, COORD_ANCHORS)
  (ga_h, ga_w), (gb_h, gb_w) = _pair(grid_a), _pair(grid_b)
  frac = 0.5 if anchor == "centre" else 0.0

  def offset(size):
    # Where the patch's point lies along its signed extent: `frac` of it, or
    # 1 - frac when the view reads this axis backwards (flip).
    return jnp.where(size < 0, 1.0 - frac, frac)

  def axis(start_a, size_a, k_a, start_b, size_b, k_b):
    # Eq. 4: bias K_A (p_B - p_A) / p_A,size and step p_B,size K_A / (K_B p_A,size);
    # the point of B's patch j, start_b + (j + o_b) size_b / k_b, in A's grid
    # whose patch i has its point at start_a + (i + o_a) size_a / k_a.
    bias = (start_b - start_a) * k_a / size_a
    scale = (size_b * k_a) / (size_a * k_b)     # exactly 1 for equal boxes and grids
    idx = jnp.arange(k_b, dtype=jnp.float32)
    return bias + (idx + offset(size_b)) * scale - offset(size_a)

  rows = axis(box_a[0], box_a[2], ga_h, box_b[0], box_b[2], gb_h)
  cols = axis(box_a[1], box_a[3], ga_w, box_b[1], box_b[3], gb_w)
  r, c = jnp.meshgrid(rows, cols, indexing="ij")
  return jnp.stack([r, c], -1)


def signed_box(box, flip):
  """A horizontally flipped crop reads its columns right to left: left edge
  moves to the right border and the width turns negative."""
  top, left, h, w = jnp.moveaxis(box, -1, 0)
  flip = jnp.asarray(flip) > 0.5
  return jnp.stack([top, jnp.where(flip, left + w, left), h, jnp.where(flip, -w, w)], -1)


# ---------------------------------------------------------------- modules

def pos_encoding(config) -> PosEncoding:
  return POS_ENCODINGS[check_choice("cr2pq.pos_encoding", config.cr2pq.pos_encoding,
                                    POS_ENCODINGS)]


def rope_freqs(config) -> str:
  """RoPE frequency spacing (ops/rope.py): "axial" (default) or "cr2pq" (Sec. 3.2)."""
  return check_choice("cr2pq.rope_freqs", config.cr2pq.get("rope_freqs", "axial"),
                      rope.FREQUENCIES)


def encoder_model(config):
  m = dict(config.model)
  m["posemb"] = pos_encoding(config).encoder_posemb
  if m["posemb"] == "rope":
    m["rope_freqs"] = rope_freqs(config)
  return m


def _dtype(config):
  return config.get("compute_dtype", "float32")


def build_encoder(config):
  return models.build(encoder_model(config), _dtype(config))


def build_predictor(config, enc, target_dim):
  d = config.cr2pq.decoder
  return cr2pq_heads.PositionalQueryPredictor(
      num_heads=d.get("num_heads") or enc.num_heads, target_dim=target_dim,
      depth=d.depth, mlp_ratio=d.mlp_ratio, query_pos=pos_encoding(config).query_pos,
      rope_freqs=rope_freqs(config), dtype=models.DTYPES[_dtype(config)])


def build_projector(config, target_dim):
  # Eq. 10: g' = two linear layers and an activation.
  return layers.Mlp(config.cr2pq.projector_hidden_dim, target_dim,
                    dtype=models.DTYPES[_dtype(config)])


# ---------------------------------------------------------------- teachers
# A teacher: init(rng, encoder_params, config) -> (state, constants) and
# targets(state, constants, images, config) -> tokens [B, rows, cols, D_tea].

@dataclasses.dataclass(frozen=True)
class Teacher:
  init: Callable
  targets: Callable


TEACHERS = Registry("CR2PQ teacher")


def _to_grid(tokens, out):
  """[B, N, D] -> [B, rows, cols, D]; CNNs give their map's shape, ViTs are square."""
  b, n, d = tokens.shape
  if "feature_map" in out:
    rows, cols = out["feature_map"].shape[1:3]
  else:
    rows = cols = math.isqrt(n)
    if rows * cols != n:
      raise ValueError(f"teacher returned {n} patch tokens, not a square grid.")
  return tokens.reshape(b, rows, cols, d)


def _ema_init(rng, enc_params, config):
  del rng, config
  # A separate copy: the trainer may donate params and state buffers.
  return {"teacher": jax.tree.map(jnp.array, enc_params)}, {}


def _ema_targets(state, constants, images, config):
  del constants
  out = build_encoder(config).apply({"params": state["teacher"]}, images, train=False)
  return _to_grid(out["patch"], out)


def _teacher_path(config):
  path = config.cr2pq.get("teacher_path")
  if not path:
    raise ValueError("cr2pq.teacher='frozen' needs cr2pq.teacher_path: the `export` folder "
                     "of a pre-training run, a timm / MAE / DINO ViT checkpoint file or a "
                     "torchvision-layout ResNet-50 .pth (DINO / SimCLR; 004 "
                     "Tab. 4 uses DINO / MAE / iBOT / SimCLR "
                     "encoders). Or pick cr2pq.teacher from: " + ", ".join(TEACHERS.names()))
  return path


def _frozen_init(rng, enc_params, config):
  del rng, enc_params
  teacher = interop.load_teacher(str(_teacher_path(config)), _dtype(config))
  return {}, {"teacher": teacher.variables}


def _frozen_targets(state, constants, images, config):
  del state
  module = interop.load_teacher(str(_teacher_path(config)), _dtype(config)).module
  out = module.apply(constants["teacher"], images, train=False)
  return _to_grid(out["patch"], out)


def _pixel_patch_size(config):
  return config.cr2pq.get("pixel_patch_size") or config.model.patch_size


def _pixels_targets(state, constants, images, config):
  del state, constants
  p = _pixel_patch_size(config)
  target = patches.patchify(images.astype(jnp.float32), p)
  if config.cr2pq.norm_pix:     # MAE's per-patch normalised pixels (Tab. 4 "Pixel (MIM)")
    target = patches.normalized_pixel_targets(target)
  b, h, w, _ = images.shape
  return target.reshape(b, h // p, w // p, target.shape[-1])


TEACHERS.register("ema", Teacher(_ema_init, _ema_targets))
TEACHERS.register("frozen", Teacher(_frozen_init, _frozen_targets))
TEACHERS.register("pixels", Teacher(lambda rng, p, c: ({}, {}), _pixels_targets))


def teacher_targets(state, constants, images, config):
  """Teacher tokens of `images` on the query grid; never differentiated."""
  targets = TEACHERS.get(config.cr2pq.teacher).targets(state, constants, images, config)
  targets = jax.lax.stop_gradient(targets.astype(jnp.float32))
  grid = config.cr2pq.get("query_grid")
  if grid:
    rows, cols = _pair(grid)
    if targets.shape[1:3] != (rows, cols):
      targets = jax.image.resize(targets, (targets.shape[0], rows, cols, targets.shape[-1]),
                                 "linear")
  return targets


# ---------------------------------------------------------------- forward

def _grid_coords(batch, grid):
  return jnp.broadcast_to(jnp.asarray(posemb.grid_coords(*grid)), (batch,) + (grid[0] * grid[1], 2))


def _box(batch, name):
  box = batch[f"box_{name}"]
  flip = batch.get(f"flip_{name}")
  return box if flip is None else signed_box(box, flip)


def query_coordinates(batch, grid_a, grid_b, config):
  """[B, rows_b * cols_b, 2]: view B's patches in A's grid, per example (Eq. 4)."""
  rel = functools.partial(relative_coordinates, grid_a=grid_a, grid_b=grid_b,
                          anchor=config.cr2pq.coord_anchor)
  coords = jax.vmap(rel)(_box(batch, "a"), _box(batch, "b"))
  return coords.reshape(coords.shape[0], -1, 2)


def _forward(params, state, constants, batch, rng, config, train):
  """Student context, coordinates and teacher targets for one batch."""
  pe = pos_encoding(config)
  enc = build_encoder(config)
  view_a = batch["view_a"]
  b = view_a.shape[0]
  grid_a = patches.grid_shape(view_a, config.model.patch_size)
  coords_a = _grid_coords(b, grid_a)
  r_mask, r_drop = jax.random.split(rng)
  kw = dict(train=train, rngs={"dropout": r_drop})
  if pe.cross_view:
    out = enc.apply({"params": params["encoder"]}, view_a, **kw)
    context, context_coords = out["patch"], coords_a
    targets = teacher_targets(state, constants, batch["view_b"], config)
    query_coords = query_coordinates(batch, grid_a, targets.shape[1:3], config)
    tokens = targets.reshape(b, -1, targets.shape[-1])
    query_targets = tokens
  else:
    # Tab. 6 discrete positions: one view, MAE masking, queries at masked cells.
    n = grid_a[0] * grid_a[1]
    m = masking.random_masking(r_mask, b, n, config.cr2pq.mask_ratio)
    out = enc.apply({"params": params["encoder"]}, view_a, keep_idx=m.keep_idx, **kw)
    context = out["patch"]
    context_coords = masking.gather_tokens(coords_a, m.keep_idx)
    masked_idx = jnp.argsort(m.restore_idx, axis=1)[:, m.keep_idx.shape[1]:]
    query_coords = masking.gather_tokens(coords_a, masked_idx)
    targets = teacher_targets(state, constants, view_a, config)
    if targets.shape[1:3] != grid_a:
      targets = jax.image.resize(targets, (b,) + grid_a + (targets.shape[-1],), "linear")
    tokens = targets.reshape(b, n, targets.shape[-1])
    query_targets = masking.gather_tokens(tokens, masked_idx)
  return context, context_coords, query_coords, tokens, query_targets


def _distance(pred, target, p):
  """||pred - target||_p^p over channels (Eq. 9-10)."""
  return jnp.sum(jnp.abs(pred.astype(jnp.float32) - target) ** p, axis=-1)


def init(rng, batch, config):
  r_enc, r_teacher, r_pred, r_proj, r_fwd = jax.random.split(rng, 5)
  enc = build_encoder(config)
  view_a = batch["view_a"]
  enc_params = enc.init(r_enc, view_a)["params"]
  teacher = TEACHERS.get(check_choice("cr2pq.teacher", config.cr2pq.teacher, TEACHERS.names()))
  state, constants = teacher.init(r_teacher, enc_params, config)
  context, context_coords, query_coords, tokens, _ = _forward(
      {"encoder": enc_params}, state, constants, batch, r_fwd, config, train=False)
  target_dim = tokens.shape[-1]
  pred_params = build_predictor(config, enc, target_dim).init(
      r_pred, context, context_coords, query_coords)["params"]
  proj_params = build_projector(config, target_dim).init(r_proj, context.mean(1))["params"]
  return MethodVars(params={"encoder": enc_params, "predictor": pred_params,
                            "projector": proj_params},
                    state=state, constants=constants)


def swap_views(batch):
  """The batch with views A and B exchanged (boxes and flips with them)."""
  out = dict(batch)
  for k in ("view", "box", "flip"):
    if f"{k}_a" in batch:
      out[f"{k}_a"], out[f"{k}_b"] = batch[f"{k}_b"], batch[f"{k}_a"]
  return out


def _directional_losses(params, state, constants, batch, rng, config):
  """Eq. 9 and Eq. 10 for view A predicting view B."""
  r_fwd, r_pred = jax.random.split(rng)
  context, context_coords, query_coords, tokens, query_targets = _forward(
      params, state, constants, batch, r_fwd, config, train=True)
  enc = build_encoder(config)
  target_dim = tokens.shape[-1]
  pred = build_predictor(config, enc, target_dim).apply(
      {"params": params["predictor"]}, context, context_coords, query_coords, train=True,
      rngs={"dropout": r_pred})
  p = config.cr2pq.loss_p
  patch_loss = jnp.mean(_distance(pred, query_targets, p))             # Eq. 9
  global_pred = build_projector(config, target_dim).apply(
      {"params": params["projector"]}, context.mean(1))
  global_loss = jnp.mean(_distance(global_pred, tokens.mean(1), p))    # Eq. 10
  return patch_loss, global_loss, tokens, query_coords


def loss(params, state, constants, batch, rng, step, config):
  del step
  patch_loss, global_loss, tokens, query_coords = _directional_losses(
      params, state, constants, batch, rng, config)
  if config.cr2pq.get("symmetric", False):
    # Sec. 3.2 describes A -> B "for simplicity"; the option adds B -> A and
    # averages both directions.
    p_ba, g_ba, _, _ = _directional_losses(params, state, constants, swap_views(batch),
                                           jax.random.fold_in(rng, 1), config)
    patch_loss, global_loss = (patch_loss + p_ba) / 2, (global_loss + g_ba) / 2
  total = patch_loss + config.cr2pq.global_weight * global_loss       # L_CR2PQ
  metrics = scalar_metrics(
      patch_loss=patch_loss, global_loss=global_loss,
      # Collapse watch: a constant teacher has zero spread over tokens.
      target_token_std=jnp.mean(jnp.std(tokens, axis=1)),
      query_coord_spread=jnp.mean(jnp.std(query_coords, axis=1)))
  return total, (metrics, state)


def teacher_momentum(step, config):
  """Cosine rise base -> final over training (BYOL / DINO schedule)."""
  e = config.cr2pq.ema
  horizon = config.get("total_steps")
  if not horizon:
    return jnp.asarray(e.base, jnp.float32)
  return ema.cosine_momentum(step, horizon, e.base, e.final)


def update(state, params, step, config):
  if config.cr2pq.teacher != "ema":
    return state
  return {"teacher": ema.ema_update(state["teacher"], params["encoder"],
                                    teacher_momentum(step, config))}


def encoder(config):
  # The student with RoPE over its own integer grid: a plain ViT downstream.
  return EncoderSpec(model=encoder_model(config), variables=encoder_params)



METHODS.register("cr2pq", Method(views=fixed_view("two_crops"), init=init, loss=loss,
                                encoder=encoder, update=update))
