"""D-MAE and D²-MAE: MAE pre-training of a lightweight ViT with distillation
from a frozen, larger MAE-pre-trained ViT (../shared/papers/002 Sec. 5, Fig. 8).

- The teacher (an `ssl_jax.export`, default an MAE ViT-B) sees exactly the
  student's visible patches (same `keep_idx`) and never gets gradients.
- L_attn (Eq. 5) on attention maps and L_rep (Eq. 6) on layer representations
  between any (teacher layer, student layer) pairs; D-MAE distils the
  attention of the last layer only (Fig. 9).
- D-MAE feeds the MAE decoder from the student's last layer (Sec. 5.1);
  D²-MAE from an intermediate layer k (default 8, Tab. 5), so blocks above k
  learn from distillation alone (Sec. 5.2).

Reference: github.com/wangsr126/mae-lite (projects/mae_lite/mae_lite_distill*_exp.py).
"""
import functools
from typing import NamedTuple, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from ssl_jax import export, interop
from ssl_jax.methods import METHODS, mae
from ssl_jax.methods.base import (EncoderSpec, Method, MethodVars, encoder_params,
                                  fixed_view, scalar_metrics)
from ssl_jax.models import layers, vit
from ssl_jax.ops import distill, masking, patches


class AttentionLogits(nn.Module):
  """Pre-softmax attention map q k^T / sqrt(d_h) of a `layers.Attention`.

  Eq. 5 distils A before the softmax: the paper's A_h enters Eq. 2-3 as
  softmax(A_h), and the reference hooks the map before `.softmax`. Given a
  block's first-LN output and that block's query/key parameters this gives
  exactly the logits the block computes (checked in tests/test_dmae.py).
  """
  num_heads: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, h):
    head_dim = h.shape[-1] // self.num_heads
    dense = lambda n: nn.DenseGeneral((self.num_heads, head_dim), dtype=self.dtype,
                                      kernel_init=layers.dense_init, name=n)
    q, k = dense("query")(h), dense("key")(h)                   # [B, L, H, Dh]
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32)
    return logits / jnp.sqrt(jnp.float32(head_dim))


class ExtraAttentionBlock(nn.Module):
  """D²-MAE's attention-only block on top of the student's last block.

  The reference trains a 13-block student whose 13th block keeps only norm1
  and the q/k projections (`mae_vit_tiny_d13_patch16`) and distils the
  teacher's last-layer attention onto it, so that every parameter of the
  student's 12th block (MLP included) is trained by distillation once the
  decoder reads layer 8. Dropped after pre-training: not part of the export.
  """
  num_heads: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    h = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="norm1")(x)
    return AttentionLogits(self.num_heads, self.dtype, name="attn")(h)


class Plan(NamedTuple):
  """Which layers the losses read, resolved from config and both models."""
  attn_pairs: Tuple[Tuple[int, int], ...]   # (teacher, student), 1-based
  rep_pairs: Tuple[Tuple[int, int], ...]    # 0 = patch embedding
  decoder_layer: int                        # student layer feeding the decoder
  extra_block: bool
  teacher_blocks: int                       # teacher blocks that must run


def load_teacher(config) -> export.Encoder:
  path = config.dmae.get("teacher")
  if not path:
    raise ValueError(
        "config.dmae.teacher is not set: D-MAE needs the path of an ssl_jax export "
        "(the <workdir>/export of an MAE pre-training, e.g. configs/dmae.py:teacher_cpu) "
        "or of a timm / official MAE checkpoint (.safetensors, .pth).")
  # An ssl_jax export, or the official MAE ViT-B `.pth` / a timm safetensors file.
  teacher = interop.load_teacher(str(path), config.get("compute_dtype", "float32"))
  if not isinstance(teacher.module, vit.ViT):
    raise ValueError(f"D-MAE teacher at {path} is a {type(teacher.module).__name__}; "
                     "it must be a ViT export (model name 'vit').")
  return teacher


def make_plan(config, student: vit.ViT, teacher: vit.ViT) -> Plan:
  if teacher.patch_size != student.patch_size:
    raise ValueError(
        f"D-MAE teacher patch size {teacher.patch_size} differs from the student's "
        f"{student.patch_size}: the teacher must see exactly the student's visible "
        "patches (002 Fig. 8), so both need the same patch grid. Pre-train the teacher "
        f"with model.patch_size={student.patch_size}.")
  for who, m in (("teacher", teacher), ("student", student)):
    if m.posemb == "rope":
      raise ValueError(f"D-MAE {who} uses posemb 'rope'; AttentionLogits reads plain q/k "
                       "projections. Valid posembs here: sincos2d, learn, none.")
  c = config.dmae
  extra = bool(c.get("extra_attn_block", False))
  s_attn_layers = student.depth + 1 if extra else student.depth
  attn = c.get("attn_pairs")
  if attn is None:
    attn = distill.default_pairs(teacher.depth, s_attn_layers,
                                 tuple(c.get("attn_fractions", (1.0,))))
  attn = distill.check_pairs(attn, teacher.depth, s_attn_layers, "attention")
  rep = c.get("rep_pairs")
  if rep is None:
    rep = distill.default_pairs(teacher.depth, student.depth, tuple(c.get("rep_fractions", ())))
  rep = distill.check_pairs(rep, teacher.depth, student.depth, "representation", first=0)
  if extra and not any(s == student.depth + 1 for _, s in attn):
    raise ValueError(f"dmae.extra_attn_block is on but no attention pair reads student "
                     f"layer {student.depth + 1} (the extra block): {attn}.")
  k = c.get("decoder_layer")
  k = student.depth if k is None else int(k)
  if not 1 <= k <= student.depth:
    raise ValueError(f"dmae.decoder_layer={k} is outside [1, {student.depth}].")
  need = [t for t, _ in attn] + [min(t + 1, teacher.depth) for t, _ in rep]
  return Plan(attn, rep, k, extra, max(need, default=1))


def _modules(config):
  enc, dec = mae.build_modules(config)
  teacher = load_teacher(config)
  return enc, dec, teacher, make_plan(config, enc, teacher.module)


def init(rng, batch, config):
  enc, _, teacher, plan = _modules(config)
  r_mae, r_attn, r_rep, r_extra = jax.random.split(rng, 4)
  params = dict(mae.init(r_mae, batch, config).params)    # {"encoder", "decoder"}
  t = teacher.module
  extra_params = {}
  if plan.attn_pairs:
    keys = jax.random.split(r_attn, len(plan.attn_pairs))
    extra_params["attn_mixing"] = {
        distill.pair_name(p): distill.init_head_mixing(kk, t.num_heads, enc.num_heads)
        for p, kk in zip(plan.attn_pairs, keys)}
  if plan.rep_pairs:
    keys = jax.random.split(r_rep, len(plan.rep_pairs))
    extra_params["rep_projection"] = {
        distill.pair_name(p): distill.init_projection(kk, enc.width, t.width)
        for p, kk in zip(plan.rep_pairs, keys)}
  if plan.extra_block:
    x = jnp.zeros((1, 2, enc.width), jnp.float32)
    extra_params["extra_block"] = ExtraAttentionBlock(enc.num_heads).init(r_extra, x)["params"]
  params["distill"] = extra_params
  # The teacher is a constant: never trained, never checkpointed (ARCHITECTURE.md).
  return MethodVars(params=params, state={}, constants={"teacher": teacher.variables})


def _block_attention(module: vit.ViT, block_params, normed):
  """Logits of one ViT block from its first-LN output and its q/k params."""
  qk = {"query": block_params["attn"]["query"], "key": block_params["attn"]["key"]}
  return AttentionLogits(module.num_heads, module.dtype).apply({"params": qk}, normed)


def _representation(out, layer: int, depth: int):
  """Normalised output of `layer` (002 Fig. 2): the next block's first-LN
  output, the final LayerNorm for the last layer (reference `RepCatcher`)."""
  return out["tokens"] if layer == depth else out["normed"][layer]


def _decoder_input(out, enc_params, enc: vit.ViT, layer: int):
  """MAE decoder input: the student's last layer (D-MAE, 002 Sec. 5.1) or
  layer k < depth (D²-MAE, Sec. 5.2). The encoder's own final LayerNorm is
  applied to layer k, as in the reference (`latent = self.norm(x)` at
  `decode_idx`), so the decoder always sees normalised tokens."""
  if layer == enc.depth:
    return out["tokens"]
  ln = nn.LayerNorm(epsilon=1e-6, dtype=enc.dtype)
  return ln.apply({"params": enc_params["norm"]}, out["hidden"][layer - 1])


def loss(params, state, constants, batch, rng, step, config):
  del step
  enc, dec, teacher, plan = _modules(config)
  t = teacher.module
  images = batch["image"]
  r_mask, r_drop = jax.random.split(rng)
  grid = patches.grid_shape(images, config.model.patch_size)
  m = masking.random_masking(r_mask, images.shape[0], grid[0] * grid[1], config.mae.mask_ratio)

  s_out = enc.apply({"params": params["encoder"]}, images, train=True, keep_idx=m.keep_idx,
                    return_hidden=True, rngs={"dropout": r_drop})
  # Frozen teacher on the same visible patches (Fig. 8); no gradient reaches it.
  t_vars = jax.lax.stop_gradient(constants["teacher"])
  t_out = jax.lax.stop_gradient(t.apply(t_vars, images, keep_idx=m.keep_idx, return_hidden=True,
                                        num_blocks=plan.teacher_blocks))

  # MAE reconstruction (MAE Eq.; 002 Sec. 3.1 recipe), decoder at layer k.
  tokens = _decoder_input(s_out, params["encoder"], enc, plan.decoder_layer)
  pred = dec.apply({"params": params["decoder"]}, tokens, m.restore_idx, grid)
  l_rec = mae.reconstruction_loss(pred, images, m.mask, config)

  l_attn = jnp.float32(0.0)
  for pair in plan.attn_pairs:                               # Eq. 5
    tl, sl = pair
    a_t = _block_attention(t, t_vars["params"][f"block{tl - 1}"], t_out["normed"][tl - 1])
    if sl == enc.depth + 1:
      a_s = ExtraAttentionBlock(enc.num_heads, enc.dtype).apply(
          {"params": params["distill"]["extra_block"]}, s_out["hidden"][-1])
    else:
      a_s = _block_attention(enc, params["encoder"][f"block{sl - 1}"], s_out["normed"][sl - 1])
    l_attn += distill.attention_loss(
        a_t, a_s, params["distill"]["attn_mixing"][distill.pair_name(pair)])

  l_rep = jnp.float32(0.0)
  for pair in plan.rep_pairs:                                # Eq. 6
    tl, sl = pair
    l_rep += distill.representation_loss(
        _representation(t_out, tl, t.depth), _representation(s_out, sl, enc.depth),
        params["distill"]["rep_projection"][distill.pair_name(pair)])

  c = config.dmae
  total = c.recon_weight * l_rec + c.attn_weight * l_attn + c.rep_weight * l_rep
  metrics = scalar_metrics(recon_loss=l_rec, attn_loss=l_attn, rep_loss=l_rep)
  return total, (metrics, state)


def export_variables(params, state, config):
  """The student's variables for export / evaluation.

  D²-MAE (decoder at layer k < depth) trains the encoder's final LayerNorm
  `norm` on layer-k tokens only (`_decoder_input`), yet the exported ViT
  applies it to its last layer. The reference never uses that norm
  downstream: MAE's fine-tuning (mae-lite reuses it) deletes `norm` and
  pools into a freshly initialised `fc_norm`. So the export resets `norm` to
  its initial value (scale 1, bias 0): probes see standardised last-layer
  tokens and fine-tuning trains the norm from scratch, as MAE's fc_norm.
  D-MAE (k = depth) keeps its norm, trained on the layer it is applied to.
  """
  variables = encoder_params(params, state)
  enc = mae.build_modules(config)[0]
  k = config.dmae.get("decoder_layer")
  if k is None or int(k) == enc.depth:
    return variables
  p = dict(variables["params"])
  p["norm"] = {"scale": jnp.ones_like(p["norm"]["scale"]),
               "bias": jnp.zeros_like(p["norm"]["bias"])}
  return {**variables, "params": p}


def encoder(config):
  # Only the student ViT is exported: the mappings M, N and D²-MAE's extra
  # attention block exist for pre-training alone.
  return EncoderSpec(model=mae.encoder_model(config),
                     variables=functools.partial(export_variables, config=config))



METHODS.register("dmae", Method(views=fixed_view("single_crop"), init=init, loss=loss,
                                encoder=encoder))
