"""The mask-token MIM suite (issue 14, paper 003): SimMIM, MaskFeat, BEiT and
SemanticMIM over SimMIM / MaskFeat on the embedded Fashion-MNIST, each next
to its random-init twin, the proxy-count sweep (003 Fig. 5) and the
"8 CLS tokens, streams not separated" control.

Command (resumable: rerun it to continue; finished cells are skipped):
  python -m ssl_jax.results --suite fmnist_mim [--only simmim,smim_pixel] [--seeds 3]
Writes results/fmnist_mim.{json,md,png} and results/fmnist_mim_curves.png;
cells live in results/runs/fmnist_mim/<row>/seed<k>/.

Budget: every pre-training cell sees the same images: 100 steps x batch 64
= 6,400 images (0.11 epoch of the 60k training split, 32x32), seed k in
--config.seed; ViT width 96, depth 6, 3 heads, patch 4 (64 patches).
Schedule: AdamW (0.9, 0.999), wd 0.05, peak lr 1e-3 (base_lr 4e-3 at batch
64), 10 warm-up steps, cosine to 0. A cell (pre-training + its evals) takes
~4-6 min on one busy core of a 2-core machine shared with other jobs
(results/fmnist_mim.md lists the measured pre-training minutes per row).

Protocols (each an eval job over the cell's export; paper blocks scaled
from ViT-B's 12 blocks to 6):
  lin_cls   linear probe (SGD, batch 256, 10 epochs, 5k train / 2k test
            images) on the CLS token (prefix token 0) of block 4 of 6
            (eval.block=3; 003 Sec. 4.2: the 7th of 12)
  lin_mean  the same on the mean of the patch tokens (Tab. 1 "Patch")
  dense     1x1-conv dense probe, frozen patch features of block 3 of 6
            (eval.dense_probe.block=2; Tab. 1 / Sec. 4.2: the 6th of 12),
            configs/eval/dense_probe.py:cpu (Fashion-MNIST foreground masks,
            11 classes, 3k / 1k images, 8 epochs): mIoU
  finetune  configs/eval/finetune.py:cpu (2 epochs on 5k, batch 64, scored on
            2k); the random twin's number is from-scratch training at that
            budget.
Jobs per row (cost: on the shared 2-core machine a fine-tuning took 3-12 min
and a probe 0.5-4.5 min): all four for the twins and every method row
(SimMIM, MaskFeat, BEiT, SemanticMIM over SimMIM / MaskFeat); the two linear
probes for the sweep and the control.

Rows: raw pixels (reference); random-init twins of the ViT with 1 prefix
token (SimMIM / MaskFeat / BEiT layout) and with 8 (SemanticMIM's export:
CLS + 7 proxies; also the control's layout); SimMIM, MaskFeat, BEiT (the
offline k-means tokenizer configs/tokenizers/kmeans_fmnist32_p4_v256.npz);
SemanticMIM over SimMIM (pixel target) and over MaskFeat (HOG target), 8
proxies, ratio 0.6 (003 Sec. 4.1); the sweep K in {1, 2, 4, 16} proxies of
SemanticMIM over SimMIM (K = 8 is the main row); the control: SimMIM with
`model.num_prefix=8` (8 learned prefix tokens in the same full-sequence
encoder: image, mask and prefix tokens all attend to each other, loss on the
masked patches as SimMIM). Each SemanticMIM row and the control name the
baseline they are compared with (`baseline`: the wrapped method).
Twins: SimMIM / MaskFeat / BEiT and the K = 1 sweep row -> random_vit; the
other SemanticMIM rows and the control -> random_vit8 (K = 2, 4, 16 are
compared with the 8-prefix twin: a random encoder's prefix count barely
changes its probes, see the two twin rows).

Seeds: 3 for the twins, raw pixels and every method row, 2 for the sweep /
control rows (the table prints n). The third seeds were added in a later
sitting whose disk no longer held seeds 0-1: `--first_seed 2 --seeds 3` runs
seed 2 alone and the aggregation reads seeds 0-1 from results/fmnist_mim.json.
Run order: main rows, the MaskFeat pair, BEiT, the sweep and the
control, e.g.
  python -m ssl_jax.results --suite fmnist_mim --only pixels,random_vit,random_vit8,simmim,smim_pixel --seeds 3
  python -m ssl_jax.results --suite fmnist_mim --only maskfeat,smim_hog,beit --seeds 3
  python -m ssl_jax.results --suite fmnist_mim --only smim_pixel_k1,smim_pixel_k2,smim_pixel_k4,smim_pixel_k16,simmim_8cls --seeds 2
Several runners may share the runs dir (a cell is locked by its runner).

Expected (results/fmnist_mim.md is the live table; 3 seeds, mean): linear
top-1 CLS / patch mean, random init 72.9 / 71.8, SimMIM 67.3 / 63.0,
SemanticMIM over SimMIM 69.5 / 66.9, MaskFeat 73.6 / 71.7, SemanticMIM over
MaskFeat 72.5 / 72.9, BEiT 65.8 / 64.6; raw pixels 81.8. Dense mIoU: random
21.7, SimMIM 19.3, SemanticMIM over SimMIM 27.1, BEiT 27.3.

Deviations from 003 (ImageNet ViT-B/16, 300 epochs, batch 2048): the tiny
budget and model above; SimMIM keeps its own mask (units of 2x2 patches,
ratio 0.6, configs/simmim.py), MaskFeat random patches ratio 0.4, BEiT block
masks ratio 0.4 (the baselines' configs, as 003); HOG cells shrink with the
4-px patch (ops/hog.py); BEiT's DALL-E tokenizer replaced by k-means; the
linear probe is SGD 10 epochs on 5k images instead of 100 epochs on IN-1K;
the dense probe is Fashion-MNIST foreground segmentation, not PascalVOC;
fine-tuning is 2 epochs on 5k images instead of 100 on IN-1K (Fig. 5 also
reports fine-tuning: here the sweep is read on the linear / dense probes).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from ssl_jax.results.suite import Row, row_config  # noqa: E402  pylint: disable=g-import-not-at-top

STEPS, BATCH = 100, 64
BUDGET = {"total_steps": STEPS, "batch_size": BATCH, "optim.base_lr": 4e-3,
          "optim.warmup_steps": 10, "log_every": 5, "checkpoint_every": 50,
          # width 96, depth 6, 3 heads; num_prefix stays the method config's.
          "model.width": 96, "model.depth": 6, "model.num_heads": 3}
# Random-init twin: the same config, never trained (the trainer exports step 0).
NEVER_TRAINED = {k: v for k, v in BUDGET.items() if k != "total_steps"}
NEVER_TRAINED["num_epochs"] = 0.0

MAIN = ("lin_cls", "lin_mean", "dense", "finetune")
PROBES = ("lin_cls", "lin_mean", "dense")
LINEAR = ("lin_cls", "lin_mean")


def _smim(target: str, k: int = 8):
  over = dict(BUDGET)
  over["model.num_prefix"] = k
  return f"configs/semanticmim.py:cpu,{target}", over


ROWS = [
    Row("pixels", "raw pixels", ("lin_cls",), export="pixels", role="reference",
        eval_overrides={"eval.block": -1}),
    Row("random_vit", "random init (1 prefix)", MAIN, config="configs/simmim.py:cpu",
        overrides=NEVER_TRAINED, role="reference"),
    Row("random_vit8", "random init (8 prefix)", MAIN, config="configs/semanticmim.py:cpu,pixel",
        overrides=NEVER_TRAINED, role="reference"),
    Row("simmim", "SimMIM", MAIN, config="configs/simmim.py:cpu", overrides=BUDGET,
        twin="random_vit"),
    Row("smim_pixel", "SemanticMIM over SimMIM (8 proxies)", MAIN,
        *_smim("pixel"), twin="random_vit8", baseline="simmim"),
    Row("maskfeat", "MaskFeat", MAIN, config="configs/maskfeat.py:cpu", overrides=BUDGET,
        twin="random_vit"),
    Row("smim_hog", "SemanticMIM over MaskFeat (8 proxies)", MAIN,
        *_smim("hog"), twin="random_vit8", baseline="maskfeat"),
    Row("beit", "BEiT (k-means tokenizer)", MAIN, config="configs/beit.py:cpu", overrides=BUDGET,
        twin="random_vit"),
    Row("smim_pixel_k1", "SemanticMIM over SimMIM, 1 proxy", LINEAR, *_smim("pixel", 1),
        twin="random_vit", baseline="simmim"),
    Row("smim_pixel_k2", "SemanticMIM over SimMIM, 2 proxies", LINEAR, *_smim("pixel", 2),
        twin="random_vit8", baseline="simmim"),
    Row("smim_pixel_k4", "SemanticMIM over SimMIM, 4 proxies", LINEAR, *_smim("pixel", 4),
        twin="random_vit8", baseline="simmim"),
    Row("smim_pixel_k16", "SemanticMIM over SimMIM, 16 proxies", LINEAR, *_smim("pixel", 16),
        twin="random_vit8", baseline="simmim"),
    Row("simmim_8cls", "control: SimMIM + 8 CLS, one stream", LINEAR,
        config="configs/simmim.py:cpu", overrides=dict(BUDGET, **{"model.num_prefix": 8}),
        twin="random_vit8", baseline="simmim"),
]

LINEAR_JOB = {"eval.protocols": ("linear",), "eval.block": 3, "eval.linear.optimizer": "sgd",
          "eval.linear.batch_size": 256, "eval.linear.epochs": 10,
          "eval.max_train_examples": 5_000, "eval.max_eval_examples": 2_000}

SUITE = dict(
    name="fmnist_mim",
    seeds=3,
    budget=(f"pre-training: {STEPS} steps x {BATCH} = {STEPS * BATCH:,} images (32x32 "
            "Fashion-MNIST) per cell, ViT width 96 depth 6; linear probes at block 4 of 6 "
            "(SGD, 10 epochs, 5k / 2k images); dense probe at block 3 of 6 (3k / 1k); "
            "fine-tune 2 epochs on 5k, scored on 2k"),
    jobs={
        "lin_cls": ("configs/eval/linear.py", dict(LINEAR_JOB, **{"eval.feature": "cls"})),
        "lin_mean": ("configs/eval/linear.py", dict(LINEAR_JOB, **{"eval.feature": "mean"})),
        "dense": ("configs/eval/dense_probe.py:cpu", {"eval.dense_probe.block": 2}),
        "finetune": ("configs/eval/finetune.py:cpu", {}),
    },
    columns={
        "lin_cls": ("lin_cls", "linear/top1", "linear top-1, CLS (block 4)"),
        "lin_mean": ("lin_mean", "linear/top1", "linear top-1, patch mean (block 4)"),
        "dense": ("dense", "dense_probe/miou", "dense-probe mIoU (block 3)"),
        "finetune": ("finetune", "finetune/top1", "fine-tune top-1"),
    },
    chart_columns=("lin_cls", "lin_mean", "dense", "finetune"),
    rows=ROWS,
)


def get_config(row: str):
  """The pre-training config of one row (`--config configs/results/fmnist_mim.py:simmim`)."""
  return row_config(SUITE, row, __file__)
