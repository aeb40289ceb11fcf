"""SimMIM (Xie et al. 2022) with a ViT: mask tokens in the encoder, l1 on raw pixels.

Variants: `cpu` (default; embedded Fashion-MNIST, 32 px, ViT-Ti/4 with 12 heads,
1 epoch), `tiny` (16 px, width 32, 1 block, batch 8: smoke / resume tests),
`in1k` (ImageNet-1K ViT-B/16, 300 epochs, 003 Tab. 2's BEiT column, which
003 uses for every baseline it wraps).

Command:
  python -m ssl_jax.main --config configs/simmim.py:cpu --workdir /tmp/simmim_cpu
Cost: `cpu` ~235 steps of batch 256 (ViT-Ti, 65 tokens); see README for the
measured step time on 2 CPU cores. `in1k`: ViT-B/16 over the full sequence.
Expected: prints kNN / linear-probe top-1 with the CLS token of block 7
(`eval.block=6`, 003 Sec. 4.2) for the pre-trained and the random-init
encoder; README.md holds the numbers a run printed.

Mask: SimMIM's random masking of mask units (Sec. 3.1; 32 px units on 192 px
= 2x2 ViT-B/16 patches), ratio 0.6; on 32 px with patch 4 the units are 2x2
patches = 8 px. Deviations: 32 px Fashion-MNIST / 1 epoch / base lr 1.5e-3
for the CPU job (configs/mae.py:vit_tiny says why); AdamW betas (0.9, 0.999)
as SimMIM; SimMIM's own ImageNet recipe (800 epochs, 192 px) is replaced by
003 Tab. 2's 300-epoch 224 px one; no colour jitter (the single_crop view has
crop + flip only).
"""
from ssl_jax.methods import mim_recipes


def get_config(arg: str = "cpu"):
  return mim_recipes.build("simmim", arg, mim_recipes.mim_node("pixel", "units", 0.6, unit=2))
