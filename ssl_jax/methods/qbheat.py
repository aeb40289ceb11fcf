"""QB-Heat: quarter-block prediction guided by the heat equation (Chen et al.,
../shared/papers/000).

Only one quarter of the image is encoded (Sec. 4.1, ops/quarter_blocks.py).
Its feature map is projected to 512 channels and the three masked quarters
are predicted by translational linear models, the finite-difference form of
dz/dx = A z, dz/dy = B z (Eq. 5): z(x + dx, y) = (I + dx A) z(x, y). A
6-block transformer decoder of width 512 then reconstructs the pixels of the
whole image (Sec. 4.2); the loss is MAE's, on the masked quarters.

Translation steps are fractions of the image side: dx = dy = 1/2 at a corner
and 1/4 at the centre, so the learned matrices are the paper's A^(1/2),
B^(1/2) and A^(1/4), B^(1/4) (Sec. 6.2); each scale has its own models.
The predictor and decoder are pre-training only: `encoder` exports the CNN.
"""
import math
from typing import Any, Dict

import flax.linen as nn
import jax
import jax.numpy as jnp

from ssl_jax import models
from ssl_jax.methods import METHODS
from ssl_jax.methods.base import EncoderSpec, Method, MethodVars, fixed_view, scalar_metrics
from ssl_jax.models import layers
from ssl_jax.ops import patches, posemb, quarter_blocks
from ssl_jax.registry import check_choice

NUM_EXPLICIT = (2, 4, 8)                  # Fig. 5 / Tab. 2b
SCALE_STEPS = {"corner": 0.5, "centre": 0.25}   # Fig. 4: W/2 vs W/4


def explicit_names(num_explicit: int):
  """A1/B1: right/down (Eq. 5); A2/B2: left/up; Cij: diagonals, i = x sign
  (1: +x, 2: -x), j = y sign (App. A)."""
  check_choice("qbheat num_explicit", num_explicit, NUM_EXPLICIT)
  names = ["A1", "B1"]
  if num_explicit >= 4:
    names += ["A2", "B2"]
  if num_explicit == 8:
    names += ["C11", "C12", "C21", "C22"]
  return names


def direction_matrices(models_: Dict[str, Any], num_explicit: int, step: float, xp=jnp,
                       identity: bool = True):
  """[9, D, D] prediction matrices M_d, z(p + d * step) = M_d z(p), in
  quarter_blocks.DIRECTIONS order. Works on numpy (xp=np) for tests.
  `identity=False` returns the perturbations M_d - I, built without the
  identity (what the model applies: `predict_full_map`).

  Implicit models (App. A): A2 = -A1, B2 = -B1 (Eq. 9) with 2 explicit;
  diagonals with 2 or 4 explicit average both orders of a horizontal and a
  vertical step (Eq. 10-12): I + dx A + dy B + dx dy (AB + BA) / 2.
  """
  eye = xp.eye(models_["A1"].shape[0], dtype=models_["A1"].dtype)
  if not identity:
    eye = xp.zeros_like(eye)
  a = {1: models_["A1"], -1: models_["A2"] if num_explicit >= 4 else -models_["A1"]}
  b = {1: models_["B1"], -1: models_["B2"] if num_explicit >= 4 else -models_["B1"]}
  dx = dy = step
  mats = []
  for ddy, ddx in quarter_blocks.DIRECTIONS:
    if ddy == 0 and ddx == 0:
      m = eye
    elif ddy == 0:
      m = eye + dx * a[ddx]                                       # Eq. 5 / 9
    elif ddx == 0:
      m = eye + dy * b[ddy]
    elif num_explicit == 8:
      c = models_[f"C{1 if ddx > 0 else 2}{1 if ddy > 0 else 2}"]
      m = eye + math.sqrt(dx ** 2 + dy ** 2) * c                  # Eq. 10, explicit C
    else:
      ax, by = a[ddx], b[ddy]
      m = eye + dx * ax + dy * by + dx * dy * (ax @ by + by @ ax) / 2.0   # Eq. 12
    mats.append(m)
  return xp.stack(mats)


LINEAR_INIT_STD = 0.02     # N(0, 0.02^2) init of A, B (not stated in 000)


class LinearModels(nn.Module):
  """The explicit C x C models of one translation scale (Fig. 3: 1x1 convs).
  Returns the [9, D, D] perturbations M_d - I (float32 params)."""
  dim: int
  num_explicit: int = 2
  step: float = 0.5

  @nn.compact
  def __call__(self):
    init = nn.initializers.normal(LINEAR_INIT_STD)
    ms = {n: self.param(n, init, (self.dim, self.dim)) for n in explicit_names(self.num_explicit)}
    return direction_matrices(ms, self.num_explicit, self.step, identity=False)


def predict_full_map(z, deltas, layout: quarter_blocks.Layout):
  """Linear prediction of the masked quarters (Eq. 5, Fig. 3).

  z [B, h, w, D]: projected features of the visible quarter; deltas: scale
  name -> [9, D, D] perturbations M_d - I (`direction_matrices(...,
  identity=False)`). Each sample uses the models of its scale (corner: 1/2,
  centre: 1/4). Returns the full map [B, 2h, 2w, D] in float32.

  Computed as z + dx (A z) in float32: dx A is ~1e-2 of I, so forming
  I + dx A, or the product, in bf16 (8-bit mantissa) rounds most of the
  translation away; the split form also survives reduced-precision f32
  matmuls (TPU default), whose error then scales with dx A z, not with z.
  """
  z = z.astype(jnp.float32)
  preds = {s: z[:, None] + jnp.einsum("bhwc,kdc->bkhwd", z, m.astype(jnp.float32))
           for s, m in deltas.items()}
  if len(preds) == 2:
    per_dir = jnp.where(layout.centre[:, None, None, None, None], preds["centre"], preds["corner"])
  else:
    (per_dir,) = preds.values()
  return quarter_blocks.assemble(per_dir, layout)


class QBHeatHead(nn.Module):
  """Predictor (projection + linear models, Sec. 4.2) and pixel decoder."""
  dim: int = 512
  num_explicit: int = 2
  scales: tuple = ("corner", "centre")
  depth: int = 6
  num_heads: int = 16
  patch_dim: int = 768
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, feature_map, layout: quarter_blocks.Layout, *, train: bool = False):
    """feature_map [B, h, w, C] of the visible quarter -> [B, 4hw, patch_dim]."""
    z = nn.Dense(self.dim, dtype=self.dtype, kernel_init=layers.dense_init,
                 name="proj")(feature_map)
    mats = {s: LinearModels(self.dim, self.num_explicit, SCALE_STEPS[s], name=f"linear_{s}")()
            for s in self.scales}
    # float32 full map; the decoder's residual stream stays float32 (its
    # layers compute in self.dtype), so the translation is not rounded away.
    full = predict_full_map(z, mats, layout)                          # [B, 2h, 2w, D]
    b, gh, gw, d = full.shape
    pe = posemb.sincos_2d(jnp.asarray(posemb.grid_coords(gh, gw)), d)
    x = full.reshape(b, gh * gw, d) + pe.astype(full.dtype)
    for i in range(self.depth):
      x, _, _ = layers.Block(self.num_heads, dtype=self.dtype, name=f"block{i}")(x, train=train)
    x = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="norm")(x)
    return nn.Dense(self.patch_dim, dtype=self.dtype, kernel_init=layers.dense_init,
                    name="pred")(x)


def scales_for(position: str):
  check_choice("qbheat position", position, quarter_blocks.POSITIONS)
  return ("corner", "centre") if position == "mixed" else (position,)


def _dtype(config):
  return config.get("compute_dtype", "float32")


def build_encoder(config):
  return models.build(dict(config.model), _dtype(config))


def build_head(config, patch_size: int, channels: int = 3):
  q = config.qbheat
  return QBHeatHead(dim=q.predictor_dim, num_explicit=q.num_explicit,
                    scales=scales_for(q.position), depth=q.decoder.depth,
                    num_heads=q.decoder.num_heads,
                    patch_dim=patch_size * patch_size * channels,
                    dtype=models.DTYPES[_dtype(config)])


def _patch_size(images, quarter_map) -> int:
  """Pixels per full-map cell: the full map is twice the quarter's map."""
  h, w = images.shape[1:3]
  gh, gw = 2 * quarter_map.shape[1], 2 * quarter_map.shape[2]
  if h % gh or w % gw or h // gh != w // gw:
    raise ValueError(f"image {h}x{w} is not an integer multiple of the predicted {gh}x{gw} map.")
  return h // gh


def _encode(enc, params, state, quarters, train):
  """Encoder on the visible quarters only; BN statistics come back as state."""
  variables = {"params": params["encoder"], **state}
  if train and state:
    out, new_state = enc.apply(variables, quarters, train=True, mutable=list(state))
    return out, dict(new_state)
  return enc.apply(variables, quarters, train=train), state


def reconstruct(params, state, images, layout, config, *, train=False, rng=None):
  """-> (pred [B, N, p*p*C], loss mask [B, N], patch size, new state)."""
  quarters = quarter_blocks.crop_quarters(images, layout)
  out, new_state = _encode(build_encoder(config), params, state, quarters, train)
  fmap = out["feature_map"]
  p = _patch_size(images, fmap)
  head = build_head(config, p, images.shape[-1])
  rngs = {"dropout": rng} if rng is not None else {}
  pred = head.apply({"params": params["head"]}, fmap, layout, train=train, rngs=rngs)
  mask = quarter_blocks.masked_grid(layout, 2 * fmap.shape[1], 2 * fmap.shape[2])
  return pred, mask, p, new_state


def init(rng, batch, config):
  images = batch["image"]
  r_enc, r_head, r_layout = jax.random.split(rng, 3)
  layout = quarter_blocks.sample_layout(r_layout, images.shape[0], config.qbheat.position)
  quarters = quarter_blocks.crop_quarters(images, layout)
  enc = build_encoder(config)
  enc_vars = enc.init(r_enc, quarters)
  fmap_shape = jax.eval_shape(enc.apply, enc_vars, quarters)["feature_map"]
  fmap = jnp.zeros(fmap_shape.shape, fmap_shape.dtype)   # the head init needs shapes only
  head = build_head(config, _patch_size(images, fmap), images.shape[-1])
  head_params = head.init(r_head, fmap, layout)["params"]
  state = {k: v for k, v in enc_vars.items() if k != "params"}
  return MethodVars(params={"encoder": enc_vars["params"], "head": head_params},
                    state=state, constants={})


def loss(params, state, constants, batch, rng, step, config):
  del constants, step
  images = batch["image"]
  r_layout, r_drop = jax.random.split(rng)
  layout = quarter_blocks.sample_layout(r_layout, images.shape[0], config.qbheat.position)
  pred, mask, p, new_state = reconstruct(params, state, images, layout, config,
                                         train=True, rng=r_drop)
  # MAE loss (MAE Sec. 3) on the three masked quarters.
  target = patches.patchify(images.astype(jnp.float32), p)
  if config.qbheat.norm_pix_loss:
    target = patches.normalized_pixel_targets(target)
  l = patches.masked_mse(pred, target, mask)
  return l, (scalar_metrics(recon_loss=l), new_state)


def encoder(config):
  return EncoderSpec(model=dict(config.model),
                     variables=lambda params, state: {"params": params["encoder"], **state})



METHODS.register("qbheat", Method(views=fixed_view("single_crop"), init=init, loss=loss,
                                encoder=encoder))
