"""Decoder probing "tran-1" (000 Sec. 5, App. B.1 Tab. 11).

One transformer block of its own width over the frozen encoder's patch tokens,
then global average pooling and a linear classifier; only the decoder trains.
Works on any encoder's `patch` tokens (ViT tokens, or a CNN's flattened
feature map), so ViTs and CNNs are compared with the same decoder.

Tab. 11 recipe: AdamW, base lr 5e-4 (lr = base * batch / 256), weight decay
0.1, batch 4096, cosine decay with 10 warm-up epochs, 200 epochs,
RandAug(9, 0.5), label smoothing 0.1, dropout 0.1 (MF-285M) / 0.2 (larger),
random erasing 0 / 0.25 (MF-3.7G); decoder width 192 / 384 / 768 for
MF-285M / 1.0G / 3.7G (App. B.1).

Not stated by 000, chosen here and named: the input projection to the decoder
width, fixed 2D sin-cos position embeddings added before the block (without
them the block would be blind to layout), heads = width / 64, a LayerNorm
before pooling, dropout before the classifier, AdamW betas (0.9, 0.999).
The probe trains as a job of the one trainer (method "decoder_probe",
`methods/decoder_probe.py`; the protocol: `ssl_jax/protocol_jobs.py`). With
`augment=False` (the CPU default) the job sees the eval view of each image
(no crops, flips, RandAug or erasing).
"""
import os
from typing import Any, Dict

import flax.linen as nn
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np

from ssl_jax.models import layers
from ssl_jax.ops import posemb as posemb_lib
from ssl_jax.registry import check_choice


# 000 App. B.1: decoder width per Mobile-Former size; Tab. 11: dropout, random erase.
TAB11_SIZES = {"mf285m": (192, 0.1, 0.0), "mf1g": (384, 0.2, 0.0), "mf3.7g": (768, 0.2, 0.25)}


def tab11(size: str = "mf285m") -> Dict[str, Any]:
  """The tran-1 probing recipe of 000 Tab. 11 as a config dict."""
  width, dropout, erase = TAB11_SIZES[check_choice("tran-1 size", size, TAB11_SIZES)]
  return dict(width=width, num_heads=0, mlp_ratio=4.0, dropout=dropout, posemb="sincos2d",
              block=-1, augment=True, epochs=200, warmup_epochs=10.0, batch_size=4096,
              base_lr=5e-4, min_lr=0.0, weight_decay=0.1, label_smoothing=0.1,
              randaug=(9, 0.5), random_erase=erase, crop_scale=(0.08, 1.0), hflip=True)


def token_grid(n: int, image_hw=None):
  """(rows, cols) of n row-major patch tokens: square, or with the aspect of
  an image of size image_hw."""
  h, w = image_hw or (1, 1)
  rows = int(round(np.sqrt(n * h / w)))
  cols = n // max(rows, 1)
  if rows < 1 or rows * cols != n or abs(rows * w - cols * h) > max(h, w) * 0.5 / max(rows, cols):
    shape = "a square grid" if image_hw is None else f"a grid of a {h}x{w} image's aspect"
    raise ValueError(f"{n} tokens do not form {shape}; pass grid=(rows, cols).")
  return rows, cols


class Tran1Decoder(nn.Module):
  """Patch tokens [B, N, C] -> logits [B, num_classes]."""
  num_classes: int
  width: int = 192
  num_heads: int = 0            # 0: width // 64
  mlp_ratio: float = 4.0
  dropout: float = 0.1
  posemb: str = "sincos2d"      # sincos2d | none

  @nn.compact
  def __call__(self, tokens, *, train: bool = False, grid=None):
    check_choice("tran-1 posemb", self.posemb, ("sincos2d", "none"))
    grid = grid or token_grid(tokens.shape[1])
    x = nn.Dense(self.width, kernel_init=layers.dense_init, name="embed")(tokens)
    if self.posemb == "sincos2d":
      x = x + posemb_lib.sincos_2d(jnp.asarray(posemb_lib.grid_coords(*grid)), self.width)
    heads = self.num_heads or max(1, self.width // 64)
    x, _, _ = layers.Block(heads, self.mlp_ratio, name="block")(x, train=train)
    x = nn.LayerNorm(epsilon=1e-6, name="norm")(x).mean(axis=1)     # global pooling
    x = nn.Dropout(self.dropout)(x, deterministic=not train)
    return nn.Dense(self.num_classes, kernel_init=nn.initializers.truncated_normal(0.01),
                    name="head")(x)


def decoder_kwargs(cfg, num_classes: int) -> Dict[str, Any]:
  return dict(num_classes=num_classes, width=cfg.width, num_heads=cfg.get("num_heads", 0),
              mlp_ratio=cfg.get("mlp_ratio", 4.0), dropout=cfg.dropout,
              posemb=cfg.get("posemb", "sincos2d"))


def decoder_from_config(cfg, num_classes: int) -> Tran1Decoder:
  return Tran1Decoder(**decoder_kwargs(cfg, num_classes))


def smoothed_targets(labels, num_classes: int, smoothing: float):
  """timm's label smoothing: off = s / K, on = 1 - s + s / K."""
  off = smoothing / num_classes
  return jax.nn.one_hot(labels, num_classes) * (1.0 - smoothing) + off


def predict_in_batches(fn, x: np.ndarray, batch_size: int, put=jnp.asarray) -> np.ndarray:
  """fn over fixed-size chunks of x (the last one zero-padded), so `fn`
  compiles once whatever len(x) is."""
  batch_size = min(batch_size, len(x))
  outs = []
  for s in range(0, len(x), batch_size):
    chunk = np.asarray(x[s:s + batch_size])
    pad = batch_size - len(chunk)
    if pad:
      chunk = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], chunk.dtype)])
    out = np.asarray(fn(put(chunk)))
    outs.append(out[:len(out) - pad] if pad else out)
  return np.concatenate(outs)


def save_params(params, path: str) -> str:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "wb") as f:
    f.write(flax.serialization.msgpack_serialize(jax.tree.map(np.asarray, params)))
  return path


def load_params(path: str):
  with open(path, "rb") as f:
    return flax.serialization.msgpack_restore(f.read())


def run(config, encoder, data, mesh) -> Dict[str, float]:
  """Protocol "decoder_probe" as a trainer job (`protocol_jobs.run_decoder_probe`,
  method "decoder_probe"): {"top1", "top5", "final_loss"}."""
  # Imported here: the trainer imports ssl_jax.evaluate.
  from ssl_jax import protocol_jobs  # pylint: disable=g-import-not-at-top
  return protocol_jobs.run_decoder_probe(config, encoder, data, mesh)
