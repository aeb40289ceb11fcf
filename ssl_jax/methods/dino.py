"""DINO (Caron et al. 2021) and the self-distillation engine iBOT, DINOv2 and
the position-field DINOv2 of ../shared/papers/001 build on.

DINO (Alg. 1): a student ViT + DINO head sees every multi-crop view (2 global
+ N local), an EMA teacher sees the 2 global crops; the student matches the
teacher's centred, sharpened distribution over K prototypes with a
cross-entropy for every (teacher global crop, other student crop) pair
(`ops.dino_loss.dino_cls_loss`). Teacher: no gradient, EMA with cosine
momentum 0.996 -> 1 (`update`); centre: EMA 0.9 of the teacher logits;
teacher temperature warm-up 0.04 -> 0.07; student temperature 0.1.

The engine (`make_loss`) also holds the patch-level terms its descendants
switch on through config and two hooks, so each of them stays a page:
- masked patch prediction (iBOT Eq. 2): `dino.patch_loss_weight > 0` and a
  `draw_masks(rng, batch, grid, config) -> (content_mask, pos_mask)` hook
  ([B, 2, N] each, pos_mask None unless 001's position masking);
- KoLeo on the student's global CLS tokens (DINOv2): `dino.koleo_weight`;
- Sinkhorn-Knopp instead of centring (DINOv2): `dino.centering`;
- positions from outside the ViT (001's field): a `positions(tree, batch, rng)
  -> (global_pos [B, 2, N, D], local_pos)` hook, evaluated on the student's
  and the teacher's parameters alike.

params: `encoder`, `heads` {cls[, patch][, pos]} (+ a method's extras);
state: `teacher` (an EMA copy of params), `centres` {cls, patch, pos}.
Monitors logged every step: teacher entropy (per sample and of the batch
mean), KL(teacher || student), centre norm, teacher temperature, momentum.
"""
from typing import Callable, Optional

import jax
import jax.numpy as jnp

from ssl_jax import models
from ssl_jax.methods import METHODS
from ssl_jax.methods.base import EncoderSpec, Method, MethodVars, fixed_view, scalar_metrics
from ssl_jax.models.dino_head import DINOHead
from ssl_jax.ops import dino_loss as L
from ssl_jax.ops import ema
from ssl_jax.registry import check_choice

CENTERINGS = ("centering", "sinkhorn_knopp")
HEAD_MODES = ("shared", "separate")
PATCH_TOKENS = ("masked", "all")


# ------------------------------------------------------------------ modules
def model_config(config, train: bool = True):
  """The ViT config; a learned table is stored at the global crop's grid and
  resized for the local crops (DINO's interpolate_pos_encoding)."""
  cfg = dict(config.model)
  if cfg.get("posemb") == "learn" and "posemb_grid" not in cfg:
    g = config.data.image_size // cfg["patch_size"]
    cfg["posemb_grid"] = (g, g)
  if not train:
    cfg.pop("drop_path", None)      # the teacher (DINO builds it without drop path)
  return cfg


def head_names(config):
  """Heads the config needs: `cls` always; `patch` / `pos` when separate."""
  d = config.dino
  check_choice("dino.head_mode", d.head_mode, HEAD_MODES)
  names = ["cls"]
  if d.head_mode == "separate":
    if d.patch_loss_weight > 0:
      names.append("patch")
    if d.get("pos_loss_weight", 0.0) > 0:
      names.append("pos")
  return names


def head_for(term: str, config) -> str:
  return term if term in head_names(config) else "cls"


def build_head(config, term: str):
  d = config.dino
  dtype = models.DTYPES[config.get("compute_dtype", "float32")]
  out = d.out_dim if head_for(term, config) == "cls" else d.patch_out_dim
  return DINOHead(out_dim=out, hidden_dim=d.hidden_dim, bottleneck_dim=d.bottleneck_dim,
                  num_layers=d.head_layers, norm_last_layer=d.norm_last_layer, dtype=dtype)


def uses_masks(config) -> bool:
  return config.dino.patch_loss_weight > 0


# ------------------------------------------------------------------ init
def init(rng, batch, config, extra_params: Optional[Callable] = None):
  """Student params (encoder, heads, extras), teacher = a copy, zero centres.
  `extra_params(rng, config, width) -> dict` adds a method's own parameters."""
  enc = models.build(model_config(config), config.get("compute_dtype", "float32"))
  r_enc, r_head, r_extra = jax.random.split(rng, 3)
  g = batch["global_crops"][:, 0]
  kw = {}
  if uses_masks(config):     # creates the ViT's mask token
    kw["mask"] = jnp.zeros(g.shape[:1] + ((g.shape[1] // enc.patch_size) ** 2,))
  enc_params = enc.init(r_enc, g, **kw)["params"]
  params = {"encoder": enc_params, "heads": {}}
  feat = jnp.zeros((1, enc.width))
  for i, name in enumerate(head_names(config)):
    params["heads"][name] = build_head(config, name).init(
        jax.random.fold_in(r_head, i), feat)["params"]
  if extra_params is not None:
    params.update(extra_params(r_extra, config, enc.width))
  d = config.dino
  centres = {"cls": jnp.zeros((1, d.out_dim))}
  if uses_masks(config):
    centres["patch"] = jnp.zeros((1, d.out_dim if head_for("patch", config) == "cls"
                                  else d.patch_out_dim))
  if d.get("pos_loss_weight", 0.0) > 0:
    centres["pos"] = jnp.zeros((1, d.out_dim if head_for("pos", config) == "cls"
                                else d.patch_out_dim))
  state = {"teacher": jax.tree.map(jnp.copy, params), "centres": centres}
  return MethodVars(params=params, state=state, constants={})


# ------------------------------------------------------------------ forward
def _crop_major(x):
  """[B, V, ...] -> [V * B, ...] (DINO's chunk order: crop, then image)."""
  return jnp.swapaxes(x, 0, 1).reshape((-1,) + x.shape[2:])


def _encode(module, enc_params, crops, *, train, rng=None, mask=None, pos=None):
  """crops [B, V, H, W, 3] -> cls [V, B, D], patch [V, B, N, D]."""
  b, v = crops.shape[:2]
  kw = {}
  if mask is not None:
    kw["mask"] = _crop_major(mask)
  if pos is not None:
    kw["pos"] = _crop_major(pos)
  out = module.apply({"params": enc_params}, _crop_major(crops), train=train,
                     rngs={"dropout": rng} if train else {}, **kw)
  return (out["cls"].reshape(v, b, -1).astype(jnp.float32),
          out["patch"].reshape((v, b) + out["patch"].shape[1:]))


def _head(config, tree, term, x):
  name = head_for(term, config)
  return build_head(config, term).apply({"params": tree["heads"][name]}, x)


def schedules(step, config):
  d = config.dino
  total = int(config.total_steps)
  # The trainer records the epoch length; a bare config falls back to num_epochs.
  steps_per_epoch = config.get("steps_per_epoch") or total / max(float(config.num_epochs), 1e-9)
  temp = L.teacher_temperature(step, int(d.warmup_teacher_temp_epochs * steps_per_epoch),
                               d.warmup_teacher_temp, d.teacher_temp)
  return temp, ema.cosine_momentum(step, total, d.momentum_teacher)


def _teacher_targets(logits, centre, temp, config, weights=None):
  """Centring + sharpening (DINO) or Sinkhorn-Knopp (DINOv2) over every row."""
  d = config.dino
  if check_choice("dino.centering", d.centering, CENTERINGS) == "centering":
    return L.centred_softmax(logits, centre, temp)
  flat = logits.reshape(-1, logits.shape[-1])
  w = None if weights is None else weights.reshape(-1)
  return L.sinkhorn_knopp(flat, temp, d.sk_iterations, w).reshape(logits.shape)


def make_loss(draw_masks: Optional[Callable] = None, positions: Optional[Callable] = None):
  """The family's loss; `draw_masks` / `positions` are the hooks above."""

  def loss_fn(params, state, constants, batch, rng, step, config):
    del constants
    d = config.dino
    check_choice("dino.patch_loss_tokens", d.patch_loss_tokens, PATCH_TOKENS)
    student = models.build(model_config(config), config.get("compute_dtype", "float32"))
    teacher = models.build(model_config(config, train=False),
                           config.get("compute_dtype", "float32"))
    tparams = jax.lax.stop_gradient(state["teacher"])          # the teacher gets no gradient
    r_mask, r_pos, r_g, r_l = jax.random.split(rng, 4)
    g = batch["global_crops"]
    b = g.shape[0]
    grid = (g.shape[2] // student.patch_size, g.shape[3] // student.patch_size)
    n = grid[0] * grid[1]
    temp, momentum = schedules(step, config)

    content_mask = pos_mask = None
    if uses_masks(config):
      if draw_masks is None:
        raise ValueError(f"method {config.method!r} draws no masks: dino.patch_loss_weight must "
                         "be 0 (use method 'ibot', 'dinov2' or 'posfield' for masked patches).")
      content_mask, pos_mask = draw_masks(r_mask, b, grid, config)
    s_gpos = s_lpos = t_gpos = None
    if positions is not None:
      s_gpos, s_lpos = positions(params, batch, r_pos, config)
      t_gpos, _ = positions(tparams, batch, r_pos, config)
      if pos_mask is not None:      # 001 Eq. 4: masked positions -> e_[POS_MASK]
        s_gpos = jnp.where(pos_mask[..., None] > 0, params["pos_mask_token"], s_gpos)

    # Student: every crop, grouped by size (DINO's MultiCropWrapper).
    s_cls, s_patch = _encode(student, params["encoder"], g, train=True, rng=r_g,
                             mask=content_mask, pos=s_gpos)
    cls_list = [s_cls]
    if "local_crops" in batch:
      l_cls, _ = _encode(student, params["encoder"], batch["local_crops"], train=True,
                         rng=r_l, pos=s_lpos)
      cls_list.append(l_cls)
    s_cls_all = jnp.concatenate(cls_list, 0)                           # [V, B, D]
    # Teacher: global crops only, unmasked.
    t_cls, t_patch = _encode(teacher, tparams["encoder"], g, train=False, pos=t_gpos)

    t_logits = _head(config, tparams, "cls", t_cls)                    # [2, B, K]
    s_logits = _head(config, params, "cls", s_cls_all)                 # [V, B, K]
    t_probs = _teacher_targets(t_logits, state["centres"]["cls"], temp, config)
    loss_cls, kl = L.dino_cls_loss(s_logits, t_probs, d.student_temp)
    ent, mean_ent = L.entropy_monitors(t_probs)
    centres = {"cls": L.update_centre(state["centres"]["cls"], t_logits, d.centre_momentum)}
    metrics = dict(dino_loss=loss_cls, teacher_entropy=ent, teacher_mean_entropy=mean_ent,
                   kl_teacher_student=kl, centre_norm=jnp.linalg.norm(state["centres"]["cls"]),
                   teacher_temp=temp, teacher_momentum=momentum)
    total = loss_cls

    # Masked patch terms: iBOT's content term and 001's position term share the math.
    terms = []
    if uses_masks(config):
      terms.append(("patch", content_mask, d.patch_loss_weight))
    if pos_mask is not None:
      terms.append(("pos", pos_mask, d.pos_loss_weight))
    t_patch = t_patch.astype(jnp.float32)                              # [2, B, N, D]
    s_patch = s_patch.astype(jnp.float32)
    for term, mask_bv, weight in terms:
      mask = jnp.swapaxes(mask_bv, 0, 1)                               # [2, B, N]
      if d.patch_loss_tokens == "all":       # 001 Eq. 4-5 read literally: every token
        mask = jnp.broadcast_to((mask.sum(-1, keepdims=True) > 0).astype(mask.dtype), mask.shape)
      tl = _head(config, tparams, term, t_patch)
      tp = _teacher_targets(tl, state["centres"][term], temp, config, weights=mask)
      sl = _head(config, params, term, s_patch)
      term_loss = L.masked_patch_loss(sl, tp, mask, d.student_temp)
      # iBOT: the patch centre is the mean over every teacher patch token.
      centres[term] = L.update_centre(state["centres"][term], tl, d.centre_momentum)
      p_ent, p_mean_ent = L.entropy_monitors(tp, mask)
      metrics.update({f"{term}_loss": term_loss, f"{term}_teacher_entropy": p_ent,
                      f"{term}_teacher_mean_entropy": p_mean_ent,
                      f"{term}_centre_norm": jnp.linalg.norm(state["centres"][term]),
                      f"{term}_mask_ratio": mask_bv.mean() * 1.0})
      total = total + weight * term_loss

    if d.koleo_weight > 0:     # DINOv2: summed over the 2 global crops
      kol = L.koleo(s_cls[0]) + L.koleo(s_cls[1])
      metrics["koleo_loss"] = kol
      total = total + d.koleo_weight * kol
    metrics["loss_total"] = total
    return total, (scalar_metrics(**metrics), {"teacher": state["teacher"], "centres": centres})

  return loss_fn


def update(state, params, step, config):
  """Teacher <- m teacher + (1 - m) student, m on DINO's cosine 0.996 -> 1."""
  _, momentum = schedules(step, config)
  return dict(state, teacher=ema.ema_update(state["teacher"], params, momentum))


def backbone_variables(tree):
  """Export the ViT only (the mask token is a training-time input)."""
  enc = {k: v for k, v in tree["encoder"].items() if k != "mask_token"}
  return {"params": enc}


def encoder(config):
  """DINO evaluates the teacher backbone (`--checkpoint_key teacher`)."""
  which = check_choice("dino.export", config.dino.get("export", "teacher"),
                       ("teacher", "student"))
  pick = (lambda params, state: state["teacher"]) if which == "teacher" else \
      (lambda params, state: params)
  return EncoderSpec(model=model_config(config, train=False),
                     variables=lambda params, state: backbone_variables(pick(params, state)))


def family_config(method: str, arg: str, in1k: dict, cpu: dict, **dino_overrides):
  """Config shared by configs/{dino,ibot,dinov2,posfield}.py: DINO's recipe
  (main_dino.py defaults) with the method's `dino` overrides, then a variant:
  `tiny` (tests: 16 px, width 32, 1 block, batch 8), `cpu` (embedded
  Fashion-MNIST; `cpu` dict overrides `dino`) or an ImageNet variant (`in1k`:
  name -> fn(config) applying the paper's table)."""
  from ssl_jax import config_defaults  # pylint: disable=g-import-not-at-top
  c = config_defaults.base_config()
  c.method = method
  c.dino = default_config(**dino_overrides)
  c.data.augment = "dino"
  c.data.crop_scale = (0.4, 1.0)              # DINO global_crops_scale
  c.data.local_crop_scale = (0.05, 0.4)       # DINO local_crops_scale
  c.data.num_local_crops = 8
  c.data.local_crop_size = 96
  o = c.optim
  o.base_lr, o.min_lr, o.warmup_epochs = 5e-4, 1e-6, 10.0     # lr = 5e-4 * batch / 256
  o.b1, o.b2 = 0.9, 0.999                                     # torch AdamW defaults
  o.weight_decay, o.weight_decay_end = 0.04, 0.4              # cosine wd schedule
  o.clip_grad_norm, o.clip_grad_mode = 3.0, "per_param"       # DINO clip_gradients
  o.frozen = (("last_layer", 1.0),)                           # freeze_last_layer = 1 epoch
  c.eval.feature = "cls"
  if arg == "tiny":
    c.model = dict(name="vit", variant="Ti", width=32, depth=1, num_heads=2, patch_size=4,
                   posemb="learn", drop_path=0.1)
    c.dino.update(out_dim=64, patch_out_dim=64, hidden_dim=64, bottleneck_dim=32)
    c.data.local_crop_size, c.data.num_local_crops = 8, 2
    o.frozen = (("last_layer", 0.5),)          # the first of the 2-step epochs
    return config_defaults.tiny_job(c)
  if arg == "cpu":
    c.model = dict(name="vit", variant="Ti", width=128, depth=4, num_heads=4, patch_size=4,
                   posemb="learn", drop_path=0.0)
    c.dino.update(out_dim=1024, patch_out_dim=1024, hidden_dim=512, bottleneck_dim=128,
                  warmup_teacher_temp_epochs=0.2)
    c.dino.update(cpu)
    c.data.image_size, c.data.local_crop_size, c.data.num_local_crops = 32, 16, 4
    config_defaults.cpu_job(c, epochs=1.0, base_lr=1e-3, warmup_epochs=0.1)
    c.batch_size = 128
    c.optim.weight_decay_end = 0.1
    c.optim.frozen = (("last_layer", 0.02),)
    return c
  if arg not in in1k:
    raise ValueError(f"Unknown variant {arg!r}. Valid: tiny, cpu, {', '.join(in1k)}.")
  config_defaults.imagenet_job(c)
  c.data.local_crop_size = 96
  in1k[arg](c)
  return c


def default_config(**overrides):
  """DINO's defaults (main_dino.py); iBOT / DINOv2 / 001 configs override."""
  d = dict(out_dim=65536, patch_out_dim=65536, hidden_dim=2048, bottleneck_dim=256,
           head_layers=3, norm_last_layer=True, head_mode="shared",
           student_temp=0.1, teacher_temp=0.07, warmup_teacher_temp=0.04,
           warmup_teacher_temp_epochs=30.0, centre_momentum=0.9, momentum_teacher=0.996,
           centering="centering", sk_iterations=3,
           patch_loss_weight=0.0, patch_loss_tokens="masked", mask_ratio=(0.1, 0.5),
           mask_prob=0.5, mask_min_block=4, pos_loss_weight=0.0,
           koleo_weight=0.0, export="teacher")
  d.update(overrides)
  return d


METHODS.register("dino", Method(views=fixed_view("multi_crop"), init=init, loss=make_loss(),
                                encoder=encoder, update=update))
