"""MaskFeat (Wei et al. 2022), image version: mask tokens in the encoder, l2 to
the HOG (ops/hog.py: 108 values per patch) of masked patches.

Variants: `cpu` (default; embedded Fashion-MNIST, 32 px, ViT-Ti/4, 1 epoch),
`tiny` (16 px, width 32, 1 block, batch 8), `in1k` (ImageNet-1K ViT-B/16,
300 epochs, 003 Tab. 2 MaskFeat column: peak lr 1.6e-3 at batch 2048, min lr
1e-6, 30 warm-up epochs, clip 0.02, crop (0.5, 1)).

Command:
  python -m ssl_jax.main --config configs/maskfeat.py:cpu --workdir /tmp/maskfeat_cpu
Cost: as configs/simmim.py:cpu plus one HOG per batch (negligible).
Expected: kNN / linear-probe top-1 (CLS of block 7) for the pre-trained and
the random-init encoder; README.md holds the numbers a run printed.
003 Tab. 1 (ImageNet, ViT-B/16, 300 ep): linear 23.4 (CLS) / 33.5 (patch).

Mask: random patches, ratio 0.4 (003 Sec. 4.1 / 4.3: the reproduced baselines
use random patch masking; MaskFeat's own paper uses block-wise masks, set
mim.mask.kind='block' for them). HOG on 32 px with patch 4: 2 px cells and a
4 px Gaussian window (ops/hog.py), keeping 2x2 cells and 108 values per patch.
Deviations: CPU schedule as configs/mae.py:vit_tiny; 003 Tab. 2's stochastic-
depth cell is illegible in our copy, so MaskFeat's own 0.0 is used; HOG is
taken on the dataset-normalised image the encoder sees.
"""
from ssl_jax.methods import mim_recipes


def get_config(arg: str = "cpu"):
  return mim_recipes.build("maskfeat", arg, mim_recipes.mim_node("hog", "random", 0.4),
                           in1k_recipe="maskfeat")
