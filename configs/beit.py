"""BEiT (Bao et al. 2022): block-wise masking, mask tokens in the encoder,
cross-entropy to discrete visual tokens of masked patches.

Variants: `cpu` (default; embedded Fashion-MNIST, 32 px, ViT-Ti/4, 1 epoch),
`tiny` (16 px, width 32, 1 block, batch 8), `in1k` (ImageNet-1K ViT-B/16,
300 epochs, 003 Tab. 2 BEiT column: peak lr 1.5e-3 at batch 2048, min lr 1e-5,
10 warm-up epochs, clip 3.0, drop-path 0.1, crop (0.08, 1)).

Tokenizer (named deviation): DALL-E's dVAE cannot be downloaded here, so the
visual tokens come from a k-means codebook of 256 codes over 4x4x3 patch
pixels of the train split, fitted offline and shipped beside this config:
  python -m ssl_jax.tokenizers.fit --out configs/tokenizers/kmeans_fmnist32_p4_v256.npz \
      --image_size 32 --patch_size 4 --vocab_size 256 --max_images 10000 --seed 0
(~4 min on 2 busy CPU cores; deterministic under the seed). For `in1k` fit one
at patch 16 on ImageNet (`--dataset imagenet2012 --image_size 224
--patch_size 16 --vocab_size 8192`) and set --config.mim.tokenizer.

Command:
  python -m ssl_jax.main --config configs/beit.py:cpu --workdir /tmp/beit_cpu
Cost: as configs/simmim.py:cpu. Expected: kNN / linear-probe top-1 (CLS of
block 7) for the pre-trained and random-init encoder; README.md holds what a
run printed. 003 Tab. 1 (ImageNet, ViT-B/16, 300 ep): linear 31.5 (CLS) / 38.7.

Mask: BEiT block-wise (Alg. 1, ops/block_mask.py), ratio 0.4, blocks of >= 4
patches on the 8x8 grid (BEiT: 16 on 14x14). Other deviations: CPU schedule as
configs/mae.py:vit_tiny; no colour jitter (single_crop is crop + flip only);
no relative position bias / layer scale (BEiT's ViT options).
"""
from ssl_jax.methods import mim_recipes


def get_config(arg: str = "cpu"):
  return mim_recipes.build("beit", arg, mim_recipes.mim_node("token", "block", 0.4))
