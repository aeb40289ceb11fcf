"""The Fashion-MNIST results suite (issue 11): every method at one equal
pre-training budget, 3 seeds, each scored with its paper's headline protocol
plus kNN and linear, next to three reference rows: raw pixels, the random-
init twin of each architecture and a supervised model of the same encoder.

Command (resumable: rerun it to continue; finished cells are skipped):
  python -m ssl_jax.results --suite fmnist [--only mae,mocov2] [--seeds 3]
Writes results/fmnist.json, results/fmnist.md (the README's table) and
results/fmnist.png; cells live in results/runs/fmnist/<row>/seed<k>/.

Budget: every pre-training cell sees the same images: 234 steps x batch 256
= 59,904 images (1 epoch of the 60k training split, 32x32), seed k in
--config.seed. Encoders: ViT "S4" (width 128, 4 blocks, 4 heads, patch 4:
the CR2PQ CPU model; smaller than the default job's ViT-Tiny so 3 seeds of
every row fit a CPU session) for MAE / CR2PQ / supervised, and the tiny
Mobile-Former of the QB-Heat / MoCo v2 CPU jobs (the paper compares them on
Mobile-Former).

Protocols (CPU variants of configs/eval/, the same for every row):
  knn       weighted kNN, k=20, T=0.07, 10k train images, the 10k test split
  linear    BN (no affine) + linear, SGD 30 epochs, 10k / 10k
  finetune  end-to-end, 2 epochs on 5k images, batch 64, scored on 2k test
            images (ViT rows; the random-init row is from-scratch training
            at the same fine-tuning budget, 002 Tab. 6's comparison)
  tran1     one transformer block over the frozen map + linear, 10 epochs,
            5k / 2k images (Mobile-Former rows, 000 Tab. 11)
  dense     1x1-conv probe on the final 8x8 feature map (ViT patch tokens,
            Mobile-Former's last stage), Fashion-MNIST foreground masks (11
            classes), 3k / 1k images, 8 epochs: mIoU (every row but pixels)
Representations: mean-pooled tokens (ViT), "pool concat" (Mobile-Former).

004 Tab. 4's three teachers are three CR2PQ rows: pixels (`cr2pq`), a frozen
MAE (`cr2pq_mae`) and the student's EMA (`cr2pq_ema`), each compared with the
pixel row in the baseline table. Rows after supervised_mf read another row's
export (`export_flags`): CR2PQ with a frozen MAE teacher reads the same seed's
MAE row; every D-MAE / D²-MAE
seed reads seed 0's D-MAE teacher (width 256, 6 blocks, 8 heads, 2 epochs),
one teacher as 002 pre-trains one, pre-trained apart and so not at the equal
budget. The teacher row's seeds 1-2 only measure the teacher's spread. Its
twin `random_teacher` (the same w256 d6 ViT, never trained) gives the
from-scratch fine-tuning at the teacher's size: MAE against scratch at equal
fine-tuning budget on a second architecture.

Expected (3 seeds, mean; results/fmnist.md is the live table with std and
the differences): kNN / linear top-1 raw pixels 81.8 / 80.5; ViT-S4 random
69.4 / 76.0 (fine-tune from scratch 52.9), supervised 76.2 / 77.7 (70.3), MAE
72.8 / 76.8 (53.7), D-MAE 72.8 / 76.4 (58.1), D²-MAE 72.7 / 76.0 (59.9),
CR2PQ pixel / frozen-MAE / EMA teacher 64.6 / 73.3 (50.6), 68.0 / 73.5 (57.4)
and 63.8 / 72.2 (52.6); w256 d6 random 69.2 / 77.8 (48.0, seeds 35-56),
MAE teacher 73.9 / 78.9 (67.8);
MF-tiny random 63.1 / 76.2, MoCo v2 71.3 / 78.8, QB-Heat 63.7 / 77.2,
supervised 72.9 / 76.7. Dense mIoU: ViT-S4 random 15.3, supervised 47.7, MAE
30.9, D-MAE 39.0, D²-MAE 38.6, CR2PQ pixel / MAE / EMA 10.6 / 20.5 / 15.3; MAE
teacher 42.2 (its twin 12.2); MF-tiny random 5.6, MoCo v2 23.2, QB-Heat 16.8,
supervised 26.6. Every fine-tune and tran-1 cell runs the trainer job
(the cells first measured with the retired in-memory loops were rerun).

Recipe changes against the methods' 1-epoch CPU configs (each listed in
the row's overrides, reasons here):
  mae      the S4 encoder; otherwise configs/mae.py:vit_tiny (raw-pixel
           targets, base lr 1.5e-3).
  mocov2   queue 4096 -> 1024 and key momentum 0.999 -> 0.99 (a 234-step
           run cannot wait ~1000 steps for a key encoder to follow), base lr
           0.06 -> 0.12: the 1-epoch default barely moved (InfoNCE 8.22 ->
           7.83 of ln 4097 = 8.32).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from ssl_jax.results.suite import Row, knn_linear_job, row_config  # noqa: E402  pylint: disable=g-import-not-at-top

VIT_S4 = dict(name="vit", variant="Ti", width=128, depth=4, num_heads=4, patch_size=4,
              drop_path=0.0)
TEACHER = dict(name="vit", variant="Ti", width=256, depth=6, num_heads=8, patch_size=4,
               drop_path=0.0)
VIT_EVAL = {"eval.feature": "mean"}
MF_EVAL = {"eval.feature": "cls"}
NEVER_TRAINED = {"num_epochs": 0.0}

ROWS = [
    Row("pixels", "raw pixels", ("frozen",), export="pixels", role="reference",
        eval_overrides={"eval.feature": "cls"}),
    Row("random_vit", "random init (ViT-S4)", ("frozen", "dense", "finetune", "analyze"),
        config="configs/supervised.py:vit_small4", overrides=NEVER_TRAINED,
        eval_overrides=VIT_EVAL, role="reference"),
    Row("supervised_vit", "supervised (ViT-S4)", ("frozen", "dense", "finetune"),
        config="configs/supervised.py:vit_small4", eval_overrides=VIT_EVAL,
        twin="random_vit", role="reference"),
    Row("mae", "MAE (ViT-S4)", ("frozen", "dense", "finetune", "analyze"),
        config="configs/mae.py:vit_tiny", overrides={"model": VIT_S4},
        eval_overrides=VIT_EVAL, twin="random_vit"),
    Row("random_mf", "random init (MF-tiny)", ("frozen", "dense", "tran1"),
        config="configs/supervised.py:mf_tiny", overrides=NEVER_TRAINED,
        eval_overrides=MF_EVAL, role="reference"),
    Row("mocov2", "MoCo v2 (MF-tiny)", ("frozen", "dense", "tran1"),
        config="configs/mocov2.py:mf_tiny",
        overrides={"mocov2.queue_size": 1024, "mocov2.momentum": 0.99, "optim.base_lr": 0.12},
        eval_overrides=MF_EVAL, twin="random_mf"),
    Row("qbheat", "QB-Heat (MF-tiny)", ("frozen", "dense", "tran1"),
        config="configs/qbheat.py:mf_tiny", eval_overrides=MF_EVAL, twin="random_mf",
        baseline="mocov2"),   # 000 Tab. 11: QB-Heat above MoCo v2 on tran-1 and linear
    Row("cr2pq", "CR2PQ, pixel teacher (ViT-S4)", ("frozen", "dense", "finetune"),
        config="configs/cr2pq.py:vit_tiny", eval_overrides=VIT_EVAL, twin="random_vit"),
    Row("supervised_mf", "supervised (MF-tiny)", ("frozen", "dense", "tran1"),
        config="configs/supervised.py:mf_tiny", eval_overrides=MF_EVAL, twin="random_mf",
        role="reference"),
    # 004 Tab. 4: CR2PQ with a frozen MAE teacher (the same seed's MAE row).
    Row("cr2pq_mae", "CR2PQ, frozen MAE teacher (ViT-S4)", ("frozen", "dense", "finetune"),
        config="configs/cr2pq.py:vit_tiny", overrides={"cr2pq.teacher": "frozen"},
        export_flags={"cr2pq.teacher_path": "mae"}, eval_overrides=VIT_EVAL, twin="random_vit",
        baseline="cr2pq"),
    # 004 Tab. 4's first row: the EMA of the student as teacher (44.1 AP-box,
    # below the pixel teacher's 45.2 and a frozen MAE ViT-B's 46.5).
    Row("cr2pq_ema", "CR2PQ, EMA teacher (ViT-S4)", ("frozen", "dense", "finetune"),
        config="configs/cr2pq.py:vit_tiny", overrides={"cr2pq.teacher": "ema"},
        eval_overrides=VIT_EVAL, twin="random_vit", baseline="cr2pq"),
    # The teacher architecture never trained: its fine-tuning cell is the
    # from-scratch model at the same fine-tuning budget, the comparison MAE
    # fine-tuning must win (issue 11; MAE Tab. 1's "scratch" row).
    Row("random_teacher", "random init (ViT w256 d6)",
        ("frozen", "dense", "finetune", "analyze"),
        config="configs/supervised.py:vit_small4",
        overrides={"model": TEACHER, **NEVER_TRAINED}, eval_overrides=VIT_EVAL,
        role="reference"),
    # 002 Sec. 5: the teacher must first be shown better than the student-size
    # MAE (fine-tuning; attention distance / entropy, Fig. 7) before students
    # distil from it. Not at the equal budget: a teacher is pre-trained apart.
    Row("dmae_teacher", "MAE teacher (ViT w256 d6, 2 epochs)",
        ("frozen", "dense", "finetune", "analyze"),
        config="configs/dmae.py:teacher_cpu",
        overrides={"model": TEACHER, "num_epochs": 2.0, "mae.decoder": dict(width=96, depth=1,
                                                                             num_heads=3)},
        # Its premise is against the student-size MAE (baseline table); its
        # twin is the same w256 d6 ViT never trained.
        eval_overrides=VIT_EVAL, twin="random_teacher", baseline="mae"),
    Row("dmae", "D-MAE (ViT-S4)", ("frozen", "dense", "finetune"),
        config="configs/dmae.py:dmae_cpu", overrides={"model": VIT_S4, "num_epochs": 1.0},
        export_flags={"dmae.teacher": "dmae_teacher@0"}, eval_overrides=VIT_EVAL,
        twin="random_vit", baseline="mae"),   # 002: students above plain MAE
    Row("d2mae", "D²-MAE (ViT-S4)", ("frozen", "dense", "finetune"),
        config="configs/dmae.py:d2mae_cpu",
        # 002 Tab. 5: the decoder reads layer 8 of 12; here layer 3 of 4.
        overrides={"model": VIT_S4, "num_epochs": 1.0, "dmae.decoder_layer": 3},
        export_flags={"dmae.teacher": "dmae_teacher@0"}, eval_overrides=VIT_EVAL,
        twin="random_vit", baseline="mae"),   # 002: students above plain MAE
]

SUITE = dict(
    name="fmnist",
    seeds=3,
    budget=("pre-training: 234 steps x 256 = 59,904 images (1 epoch, 32x32 Fashion-MNIST) per "
            "cell; probes: kNN / linear on 10k train images, the 10k test split; fine-tune "
            "2 epochs on 5k, tran-1 10 epochs on 5k, both scored on 2k test images"),
    # eval job -> (eval config, overrides); kNN and linear share one job (and
    # its features).
    jobs={
        "frozen": knn_linear_job(),
        "finetune": ("configs/eval/finetune.py:cpu", {}),
        "tran1": ("configs/eval/decoder_probe.py:cpu", {}),
        "analyze": ("configs/eval/analyze.py:cpu", {"eval.analyze.compare_random_init": False}),
        # Every method's dense probe (issue 11): a 1x1 conv on the final 8x8 feature
        # map (ViT patch tokens, the CNN's last stage), foreground masks, 3k / 1k images.
        "dense": ("configs/eval/dense_probe.py:cpu", {"eval.dense_probe.block": -1}),
    },
    # table column -> (job, metric key in the job's metrics.jsonl, title)
    columns={
        "knn": ("frozen", "knn/top1", "kNN top-1"),
        "linear": ("frozen", "linear/top1", "linear top-1"),
        "finetune": ("finetune", "finetune/top1", "fine-tune top-1"),
        "tran1": ("tran1", "decoder_probe/top1", "tran-1 top-1"),
        "dense": ("dense", "dense_probe/miou", "dense-probe mIoU"),
        "attn_dist": ("analyze", "analyze/attn_distance_last", "attn. distance, last block (px)"),
        "attn_ent": ("analyze", "analyze/attn_entropy_last", "attn. entropy, last block (nats)"),
    },
    chart_columns=("knn", "linear", "finetune", "tran1", "dense"),
    rows=ROWS,
)


def get_config(row: str):
  """The pre-training config of one row (`--config configs/results/fmnist.py:mae`)."""
  return row_config(SUITE, row, __file__)
