"""SemanticMIM's compute next to vanilla MIM (003 App. C): the paper's formula and
XLA's own count (jax.jit(...).lower(...).compile().cost_analysis()).

  python -m bench.semanticmim_flops --width 768 --depth 1 --image_size 224 --patch 16

003 App. C per block (multiply-adds, B = 1): a ViT block over L tokens costs
12 L D^2 + 2 L^2 D; a SemanticMIM block costs the self-attention block over the
L0 image + L1 proxy tokens plus the cross block,
3 L2 D^2 + L1 D^2 + 2 L1 L2 D + 2 L2^2 D (attention) + 8 L2 D^2 (MLP).
Vanilla MIM's sequence is CLS + every patch (L = 1 + L0 + L2); at inference
the cross stream is gone (L2 = 0). With D = 768, L0 = 78, L1 = 8, L2 = 118
this gives the paper's -2.8% in training and +3.7% at inference.

Measured (this script, --depth 12, ViT-B/16 at 224 px, B = 1, forward):
  train : formula -2.8%   XLA +2.3%   (3.648e+10 vs 3.567e+10 FLOPs)
  infer : formula +3.7%   XLA +3.7%   (3.698e+10 vs 3.567e+10 FLOPs)
Inference agrees. In training the formula undercounts the cross block: Eq. 4
projects keys and values of all L1 + L2 tokens (2 (L1 + L2) D^2) plus queries
and output of the L2 mask tokens (2 L2 D^2), i.e. 4 L2 D^2 + 2 L1 D^2, where
App. C writes 3 L2 D^2 + L1 D^2; the missing (L2 + L1) D^2 per block is
about 5% of a ViT-B block. Counting it (`counted_delta`) gives +2.3%, XLA's figure.
"""
import argparse

import jax
import jax.numpy as jnp

from ssl_jax import models
from ssl_jax.models import proxy_mim


def vit_block(d, l):
  return 12 * l * d * d + 2 * l * l * d


def semanticmim_block(d, l0, l1, l2):
  cross = (3 * l2 * d * d + l1 * d * d + 2 * l1 * l2 * d + 2 * l2 * l2 * d + 8 * l2 * d * d
           if l2 else 0)
  return vit_block(d, l0 + l1) + cross


def counted_delta(d, l0, l1, l2):
  """As `paper_delta` with the cross block's projections counted in full."""
  extra = (l2 + l1) * d * d if l2 else 0
  return (semanticmim_block(d, l0, l1, l2) + extra) / vit_block(d, 1 + l0 + l2) - 1.0


def paper_delta(d, l0, l1, l2):
  """Relative FLOPs change of SemanticMIM vs vanilla MIM (CLS + all patches)."""
  return semanticmim_block(d, l0, l1, l2) / vit_block(d, 1 + l0 + l2) - 1.0


def xla_flops(fn, *args):
  cost = jax.jit(fn).lower(*args).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost["flops"])


def measured(width, depth, heads, image_size, patch, num_proxies, mask_ratio):
  """XLA FLOPs of the forward pass (B = 1): vanilla MIM ViT over the full
  sequence with mask tokens, SemanticMIM's two streams, and both encoders at
  inference (all patches visible, no mask stream)."""
  n = (image_size // patch) ** 2
  m = int(round(n * mask_ratio))
  x = jnp.zeros((1, image_size, image_size, 3))
  kw = dict(name="vit", width=width, depth=depth, num_heads=heads, patch_size=patch)
  vit = models.build(kw)
  vit_p = jax.eval_shape(lambda: vit.init(jax.random.PRNGKey(0), x, mask=jnp.zeros((1, n))))
  mask = jnp.zeros((1, n)).at[:, :m].set(1.0)
  vanilla = xla_flops(lambda p, x, mk: vit.apply(p, x, mask=mk)["tokens"], vit_p, x, mask)
  smim = proxy_mim.ProxyMIM(width=width, depth=depth, num_heads=heads, patch_size=patch,
                            num_prefix=num_proxies)
  vis, msk = jnp.arange(m, n)[None], jnp.arange(m)[None]
  sp = jax.eval_shape(lambda: smim.init(jax.random.PRNGKey(0), x, vis, msk))
  ours = xla_flops(lambda p, x: smim.apply(p, x, vis, msk)["mask"], sp, x)
  enc = models.build(dict(kw, num_prefix=num_proxies))
  ep = jax.eval_shape(lambda: enc.init(jax.random.PRNGKey(0), x))
  infer_ours = xla_flops(lambda p, x: enc.apply(p, x)["tokens"], ep, x)
  infer_vanilla = xla_flops(lambda p, x: vit.apply(p, x)["tokens"], vit_p, x)
  return dict(n=n, masked=m, train_vanilla=vanilla, train_semanticmim=ours,
              infer_vanilla=infer_vanilla, infer_semanticmim=infer_ours)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  ap.add_argument("--width", type=int, default=768)
  ap.add_argument("--depth", type=int, default=1)
  ap.add_argument("--heads", type=int, default=12)
  ap.add_argument("--image_size", type=int, default=224)
  ap.add_argument("--patch", type=int, default=16)
  ap.add_argument("--proxies", type=int, default=8)
  ap.add_argument("--mask_ratio", type=float, default=0.6)
  a = ap.parse_args(argv)
  r = measured(a.width, a.depth, a.heads, a.image_size, a.patch, a.proxies, a.mask_ratio)
  l2 = r["masked"]
  l0 = r["n"] - l2
  print(f"D={a.width} depth={a.depth} L0={l0} L1={a.proxies} L2={l2} (patch embed + norms included "
        "in XLA's count, not in the formula)")
  print(f"train : formula {100 * paper_delta(a.width, l0, a.proxies, l2):+.1f}%   "
        f"counted {100 * counted_delta(a.width, l0, a.proxies, l2):+.1f}%   "
        f"XLA {100 * (r['train_semanticmim'] / r['train_vanilla'] - 1):+.1f}%   "
        f"({r['train_semanticmim']:.3e} vs {r['train_vanilla']:.3e} FLOPs)")
  print(f"infer : formula {100 * paper_delta(a.width, r['n'], a.proxies, 0):+.1f}%   "
        f"XLA {100 * (r['infer_semanticmim'] / r['infer_vanilla'] - 1):+.1f}%   "
        f"({r['infer_semanticmim']:.3e} vs {r['infer_vanilla']:.3e} FLOPs)")


if __name__ == "__main__":
  main()
