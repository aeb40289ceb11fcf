"""SemanticMIM (003): [PROXY] tokens between image and mask tokens, over any of
the three MIM targets.

Arg: `<size>` or `<size>,<target>` with size in cpu | tiny | in1k and target
in pixel (SimMIM) | hog (MaskFeat, default) | token (BEiT), e.g.
`configs/semanticmim.py:cpu,pixel`. 8 proxies (`model.num_prefix`) and mask
ratio 0.6 with random patch masking (003 Sec. 4.1); the wrapped baseline's
loss on mask-token outputs only. `in1k`: ViT-B/16, 300 epochs, 003 Tab. 2's
column of the wrapped baseline ("exactly the same recipe").

Commands:
  python -m ssl_jax.main --config configs/semanticmim.py:cpu,hog --workdir /tmp/smim_hog
  python -m ssl_jax.main --config configs/semanticmim.py:cpu,pixel --workdir /tmp/smim_pix
Cost: ViT-B/16 training forward +2.3% FLOPs over the full-sequence baseline
by XLA's count (App. C's formula says -2.8%, but undercounts Eq. 4's key/value
projections; bench/semanticmim_flops.py), +3.7% at inference (8 proxies). On
2 busy CPU cores the small-batch step is ~2x slower than SimMIM's (twice the
number of small ops); the cross stream doubles the pre-training parameters.
Expected (003 Tab. 1, ImageNet ViT-B/16 300 ep, linear probe at block 7):
MaskFeat 23.4 -> 52.0 (CLS), 33.5 -> 59.7 (patch); BEiT 31.5 -> 49.2 / 38.7
-> 48.2. The CPU job prints kNN / linear top-1 with the CLS token of block 7;
README.md holds what a run printed.

Export: the image stream only (a ViT with 8 prefix tokens; timm `reg_tokens`
layout); `eval.feature` may be cls | proxy_mean | mean | patch.
Deviations: as the wrapped baseline's config (CPU schedule, tokenizer for
"token"); the mask-token outputs get their own final LayerNorm (`mask_norm`),
so the exported encoder's final `norm` stays at its initialisation (probes at
block 7 read the raw block output and are unaffected); only sincos2d / learned
absolute position embeddings.
"""
from ssl_jax.methods import mim_recipes

_RECIPE = {"pixel": "beit", "hog": "maskfeat", "token": "beit"}


def get_config(arg: str = "cpu"):
  size, _, target = arg.partition(",")
  target = target or "hog"
  if target not in _RECIPE:
    raise ValueError(f"Unknown target {target!r}. Valid: {', '.join(_RECIPE)}.")
  c = mim_recipes.build("semanticmim", size, mim_recipes.mim_node(target, "random", 0.6),
                        num_prefix=8, in1k_recipe=_RECIPE[target])
  if size == "tiny":
    c.model.num_prefix = 2
  return c
