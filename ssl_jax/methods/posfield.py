"""Position-field DINOv2: ../shared/papers/001 (intertwined content and
positional features), on top of methods/dinov2.py.

- Position field (Sec. 3.2.1): a learnable P [h_p, w_p, d] (50 x 50, Tab. 6)
  whose corner samples sit on the image corners. Each crop's position
  embeddings are P sampled bilinearly at the crop's patch centres (its box and
  flip, in the original image), for global and local crops, student and
  teacher (each with its own field: the teacher's is the EMA of the student's).
- Position / scale augmentation (Sec. 3.2.2), our reading: A = the smallest
  rectangle (image units, |P| = 1) enclosing all crops of one image; s ~
  Beta(2, 5) rescaled to [s_min, s_max] = [0.2, 1.0] (Tab. 6), one per image;
  t_s scales A by k = sqrt(s / |A|) (so t_s(A) has area s, shrunk if needed
  to fit inside P) and moves it to a uniform position inside P; every crop's
  box follows. `posfield.scale_dist` "const" (s = 1) and "uniform" are the
  Tab. 4a rows; `posfield.field_sampling = False` gives every crop the
  full-image field (a conventional learned table resized per grid: Tab. 3
  rows without "Pos. Enc. Sampling").
- Masked position prediction (Sec. 3.3): per global crop, content masking
  (box-wise, the ViT's [MASK] token) with probability `posfield.content_prob`
  (0.5) or else position masking (cross-wise, Fig. 4: the position is replaced
  by a learned [POS_MASK] token), never both; ratio from [0.1, 0.5]. Student
  only; the teacher sees clean crops.
- Loss (Eq. 6): L_image + L_content + lambda_KoLeo L_KoLeo + L_pos with
  lambda_KoLeo = 1; L_pos / L_content (Eq. 4-5) over masked tokens by default
  (`dino.patch_loss_tokens = "all"`: every token of the masked crops); separate
  heads, 65,536 prototypes each (Tab. 6).
- Export bakes the teacher's field, sampled on the inference patch grid of the
  full image, into the ViT's absolute `pos_embedding`: every evaluation, the
  timm export and the analyses see a standard ViT (Sec. 1: "only during
  training").
"""
import jax
import jax.numpy as jnp

from ssl_jax.methods import METHODS, dino, ibot
from ssl_jax.methods.base import EncoderSpec, Method, fixed_view
from ssl_jax.ops import block_mask
from ssl_jax.registry import check_choice

SCALE_DISTS = ("beta", "uniform", "const")
FIELD = "pos_embedding_field"      # the name keeps it out of weight decay (optim.NO_DECAY)


def extra_params(rng, config, width):
  p = config.posfield
  hp, wp = p.field_size
  params = {FIELD: 0.02 * jax.random.truncated_normal(rng, -2.0, 2.0, (hp, wp, width))}
  if config.dino.pos_loss_weight > 0:
    params["pos_mask_token"] = jnp.zeros((width,))
  return params


# ------------------------------------------------------------------ field sampling
def patch_centres(boxes, flips, grid):
  """boxes [..., 4] (top, left, h, w) in image units [0, 1], flips [...] ->
  [..., gh*gw, 2] (y, x) of the patch centres in the image, row-major; a
  flipped crop's column j shows image column w - 1 - j."""
  gh, gw = grid
  fy = (jnp.arange(gh) + 0.5) / gh
  fx = (jnp.arange(gw) + 0.5) / gw
  fx = jnp.where(flips[..., None] > 0, 1.0 - fx, fx)                  # [..., gw]
  y = boxes[..., 0:1] + fy * boxes[..., 2:3]                          # [..., gh]
  x = boxes[..., 1:2] + fx * boxes[..., 3:4]                          # [..., gw]
  yy = jnp.broadcast_to(y[..., :, None], y.shape[:-1] + (gh, gw))
  xx = jnp.broadcast_to(x[..., None, :], x.shape[:-1] + (gh, gw))
  return jnp.stack([yy, xx], -1).reshape(y.shape[:-1] + (gh * gw, 2))


def sample_field(field, yx):
  """Bilinear P(y, x), (y, x) in [0, 1] with P's corners on the image corners."""
  hp, wp, _ = field.shape
  u = jnp.clip(yx[..., 0], 0.0, 1.0) * (hp - 1)
  v = jnp.clip(yx[..., 1], 0.0, 1.0) * (wp - 1)
  u0 = jnp.clip(jnp.floor(u), 0, hp - 2).astype(jnp.int32)
  v0 = jnp.clip(jnp.floor(v), 0, wp - 2).astype(jnp.int32)
  du, dv = (u - u0)[..., None], (v - v0)[..., None]
  f = lambda a, b: field[a, b]
  return ((1 - du) * (1 - dv) * f(u0, v0) + (1 - du) * dv * f(u0, v0 + 1)
          + du * (1 - dv) * f(u0 + 1, v0) + du * dv * f(u0 + 1, v0 + 1))


def draw_scale(rng, batch, config):
  p = config.posfield
  dist = check_choice("posfield.scale_dist", p.scale_dist, SCALE_DISTS)
  lo, hi = p.scale_range
  if dist == "const":
    return jnp.ones((batch,))
  u = (jax.random.beta(rng, 2.0, 5.0, (batch,)) if dist == "beta"
       else jax.random.uniform(rng, (batch,)))
  return lo + (hi - lo) * u


def scale_translate(boxes_list, rng, config):
  """Sec. 3.2.2: one t_s per image applied to all its crops' boxes.
  boxes_list: [B, V_i, 4] arrays in image units -> the transformed list."""
  b = boxes_list[0].shape[0]
  allb = jnp.concatenate(boxes_list, 1)
  top, left = allb[..., 0].min(1), allb[..., 1].min(1)
  bottom, right = (allb[..., 0] + allb[..., 2]).max(1), (allb[..., 1] + allb[..., 3]).max(1)
  ah, aw = bottom - top, right - left
  k_s, k_y, k_x = jax.random.split(rng, 3)
  s = draw_scale(k_s, b, config)
  k = jnp.sqrt(s / (ah * aw))
  k = jnp.minimum(k, 1.0 / jnp.maximum(ah, aw))         # t_s(A) stays inside the field
  new_top = jax.random.uniform(k_y, (b,)) * (1.0 - k * ah)
  new_left = jax.random.uniform(k_x, (b,)) * (1.0 - k * aw)
  out = []
  for bx in boxes_list:
    e = lambda a: a[:, None]
    out.append(jnp.stack([e(new_top) + (bx[..., 0] - e(top)) * e(k),
                          e(new_left) + (bx[..., 1] - e(left)) * e(k),
                          bx[..., 2] * e(k), bx[..., 3] * e(k)], -1))
  return out


def positions(tree, batch, rng, config):
  """Hook of the DINO engine: (global [B, 2, N, D], local [B, V, n, D] or None)."""
  field = tree[FIELD]
  patch = config.model["patch_size"]
  hw = batch["image_hw"][:, None, :]                                 # [B, 1, 2]
  names = ["global"] + (["local"] if "local_crops" in batch else [])
  boxes, flips = [], []
  for n in names:
    bx = batch[f"{n}_boxes"]
    boxes.append(jnp.concatenate([bx[..., :2] / hw, bx[..., 2:] / hw], -1))
    flips.append(batch[f"{n}_flips"])
  if config.posfield.field_sampling:
    boxes = scale_translate(boxes, rng, config)
  else:      # ablation: every crop reads the full-image field, unflipped
    boxes = [jnp.broadcast_to(jnp.array([0.0, 0.0, 1.0, 1.0]), bx.shape) for bx in boxes]
    flips = [jnp.zeros_like(f) for f in flips]
  out = []
  for n, bx, fl in zip(names, boxes, flips):
    size = batch[f"{n}_crops"].shape[2] // patch
    out.append(sample_field(field, patch_centres(bx, fl, (size, size))))
  return out[0], (out[1] if len(out) > 1 else None)


# ------------------------------------------------------------------ masks
def draw_masks(rng, batch, grid, config):
  """Per global crop: content (box-wise) with prob content_prob, else position
  (cross-wise); both [B, 2, N]. Without L_pos: DINOv2's content masks only."""
  d, p = config.dino, config.posfield
  if d.pos_loss_weight <= 0:
    return ibot.draw_masks(rng, batch, grid, config)
  k_c, k_p, k_which = jax.random.split(rng, 3)
  content = ibot.draw_block_masks(k_c, batch, grid, config, prob=1.0)
  pos, _ = block_mask.cross_mask_per_image_ratio(k_p, batch * 2, grid, tuple(d.mask_ratio))
  use_content = (jax.random.uniform(k_which, (batch, 2, 1)) < p.content_prob).astype(jnp.float32)
  return content * use_content, pos.reshape(batch, 2, -1) * (1.0 - use_content)


# ------------------------------------------------------------------ export
def baked_pos_embedding(field, grid):
  """The field on the full image's patch grid: [1, gh*gw, D]."""
  box = jnp.array([0.0, 0.0, 1.0, 1.0])
  return sample_field(field, patch_centres(box, jnp.zeros(()), grid))[None]


def encoder(config):
  """A standard ViT with an absolute `pos_embedding` = the baked field."""
  base = dino.encoder(config)
  g = config.data.image_size // config.model["patch_size"]
  model = dict(base.model, posemb="learn", posemb_grid=(g, g))

  def variables(params, state):
    tree = state["teacher"] if config.dino.get("export", "teacher") == "teacher" else params
    v = base.variables(params, state)
    v["params"] = dict(v["params"], pos_embedding=baked_pos_embedding(tree[FIELD], (g, g)))
    return v
  return EncoderSpec(model=model, variables=variables)


def _init(rng, batch, config):
  return dino.init(rng, batch, config, extra_params=extra_params)


def _check_model(config):
  if config.model.get("posemb") != "none":
    raise ValueError("posfield trains a ViT whose positions come from the field: set "
                     "model.posemb = 'none' (the export gets a baked 'learn' table).")


def _loss_fn():
  inner = dino.make_loss(draw_masks=draw_masks, positions=positions)

  def loss(params, state, constants, batch, rng, step, config):
    _check_model(config)
    return inner(params, state, constants, batch, rng, step, config)
  return loss


METHODS.register("posfield", Method(views=fixed_view("multi_crop"), init=_init, loss=_loss_fn(),
                                    encoder=encoder, update=dino.update))
