"""The DINO-family suite (issue 13, paper 001): DINO, iBOT, DINOv2 and
position-field DINOv2 on the embedded Fashion-MNIST at one step budget, next
to the random-init twin and raw pixels, and 001's ablation grid (Tab. 3:
position-encoding sampling x L_pos; Tab. 5b: position masking only) on the
canvas box and dense probes.

Command (resumable: rerun it to continue; finished cells are skipped):
  python -m ssl_jax.results --suite fmnist_dino [--only dino,posfield] [--seeds 2]
Writes results/fmnist_dino.{json,md,png} and results/fmnist_dino_curves.png;
cells live in results/runs/fmnist_dino/<row>/seed<k>/.

Budget: every pre-training cell takes the same steps: 150 steps x batch 128
= 19,200 images (0.32 epoch of the 60k split), each as 2 global 32-px crops
+ 4 local 16-px crops; ViT "S4" (width 128, 4 blocks, 4 heads, patch 4: the
configs/dino.py:cpu model). A DINO cell pre-trains in ~5.5 min on an idle
2-core CPU (59 img/s); iBOT / DINOv2 / position-field rows cost more (masked
student crops, patch heads); results/fmnist_dino.md lists the measured wall
minutes per row.

Recipe (all rows; changes against configs/<method>.py:cpu, for a 150-step
run): teacher momentum 0.99 -> 1 cosine (0.996 is for ~100 epochs: after 150
steps the teacher would still be half its initialisation), teacher
temperature 0.04 constant (DINO's vanilla ViT-S recipe, no warm-up: a
warm-up over most of a short run only delays the targets), 15 warm-up steps,
base lr 1e-3 (peak 5e-4 at batch 128), weight decay 0.04 -> 0.1 cosine,
K = 1024 prototypes (head 512 hidden, bottleneck 128).

Protocols (the same for every row; features of the CLS token, the DINO
family's home representation):
  frozen    weighted kNN (k = 20, T = 0.07; DINOv2's k sweep in the json)
            and BN + linear (SGD, batch 256, 30 epochs), 10k train images,
            the 10k test split
  canvas    configs/eval/box_probe.py:cpu on multi-object Fashion-MNIST
            canvases (ssl_jax/evaluate/canvas_data.py: 2-3 garments per 32
            px image): box probe (objectness + FCOS distances from frozen
            patch tokens, 1x1 conv): AP50 and mean IoU of matched boxes; the
            canvas dense probe (11 classes): mIoU. The toy stand-in for 001's
            COCO AP-box / AP-mask (Tab. 3, 5b).
  rank      ssl_jax/evaluate/feature_rank.py on the CLS features of 2k
            test images: RankMe (Garrido et al. 2023) and the first
            principal component's variance share, the dimensional-collapse
            monitor (the teacher-entropy curves see only the head's output).

Rows: raw pixels; the random-init twin (configs/dino.py:cpu never trained:
every row's export is this architecture; the position-field rows export the
field baked into an absolute table, whose random init is a random table
like the twin's); DINO, iBOT, DINOv2 (configs/<method>.py:cpu), position-
field DINOv2 (configs/posfield.py:cpu, both components: 001's method) and
the grid around it: pf_none (no field sampling, no L_pos: the field read as
a full-image learned table, DINOv2's content masking: 001's DINOv2-dagger
row), pf_samp (+ sampling), pf_lpos (+ L_pos and position masking without
sampling), pf_posonly (Tab. 5b: position masking on every masked crop).
Baselines: iBOT -> DINO, DINOv2 -> iBOT, position-field -> pf_none (Tab. 3
"none"), pf_samp and pf_lpos -> pf_none, pf_posonly -> position-field DINOv2
(Tab. 5b: masking ratio 0:100 against the default 50:50).

Seeds: 2 per row, 3 for the four headline rows' comparison (all ran):
  python -m ssl_jax.results --suite fmnist_dino --seeds 2
  python -m ssl_jax.results --suite fmnist_dino --seeds 3 --only pixels,random_vit,dino,ibot,dinov2

Expected (results/fmnist_dino.md is the live table; 3 seeds for the twin,
DINO, iBOT and DINOv2, 2 for the rest): kNN / linear / canvas dense mIoU /
CLS RankMe, random init 60.1 / 68.2 / 11.1 / 31; DINO 60.4 / 67.8 / 10.4 /
14 and iBOT 60.3 / 68.5 / 10.5 / 15 (at the twin, CLS features dimensionally
collapsed; teacher entropy 6.2-6.5 of ln 1024 = 6.93); DINOv2 63.7 / 68.5 /
13.2 / 69; position-field DINOv2
63.9 / 66.3 / 13.7 / 78 against pf_none 63.3 / 65.4 / 13.6 / 81 (box AP50
26.3 vs 25.1); + L_pos only 63.9 (AP50 26.0), + sampling only 63.3 (24.6);
position masking only 63.9 (AP50 26.0, level with 50:50); raw pixels 81.8 /
80.5.

Deviations from 001 / DINOv2 (ImageNet ViT-S/16, 100 epochs, batch 512, 2 x
224 + 8 x 96 crops, K = 65,536): the budget, model, crops and head above;
frozen linear probes on toy canvases instead of ViTDet fine-tuning on COCO /
ADE20K; class-agnostic box AP; field 16 x 16 (Tab. 4b: size uncritical).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from ssl_jax.results.suite import Row, feature_rank_job, knn_linear_job, row_config  # noqa: E402  pylint: disable=g-import-not-at-top

STEPS, BATCH = 150, 128
BUDGET = {"total_steps": STEPS, "batch_size": BATCH, "optim.base_lr": 1e-3,
          "optim.warmup_steps": 15, "log_every": 10, "checkpoint_every": 50,
          "dino.momentum_teacher": 0.99, "dino.teacher_temp": 0.04,
          "dino.warmup_teacher_temp_epochs": 0.0}
NEVER_TRAINED = {k: v for k, v in BUDGET.items() if k != "total_steps"}
NEVER_TRAINED["num_epochs"] = 0.0

JOBS = ("frozen", "canvas", "rank")
PF = "configs/posfield.py:cpu"


def _pf(**flags):
  return dict(BUDGET, **flags)


ROWS = [
    Row("pixels", "raw pixels", ("frozen",), export="pixels", role="reference"),
    Row("random_vit", "random init (ViT-S4)", JOBS, config="configs/dino.py:cpu",
        overrides=NEVER_TRAINED, role="reference"),
    Row("dino", "DINO", JOBS, config="configs/dino.py:cpu", overrides=BUDGET,
        twin="random_vit"),
    Row("ibot", "iBOT", JOBS, config="configs/ibot.py:cpu", overrides=BUDGET,
        twin="random_vit", baseline="dino"),
    Row("dinov2", "DINOv2", JOBS, config="configs/dinov2.py:cpu", overrides=BUDGET,
        twin="random_vit", baseline="ibot"),
    Row("pf_none", "001 grid: no sampling, no L_pos (DINOv2-dagger)", JOBS, config=PF,
        overrides=_pf(**{"posfield.field_sampling": False, "dino.pos_loss_weight": 0.0}),
        twin="random_vit"),
    Row("posfield", "position-field DINOv2 (001: sampling + L_pos)", JOBS, config=PF,
        overrides=BUDGET, twin="random_vit", baseline="pf_none"),
    Row("pf_samp", "001 grid: + sampling only", JOBS, config=PF,
        overrides=_pf(**{"dino.pos_loss_weight": 0.0}), twin="random_vit", baseline="pf_none"),
    Row("pf_lpos", "001 grid: + L_pos only", JOBS, config=PF,
        overrides=_pf(**{"posfield.field_sampling": False}), twin="random_vit",
        baseline="pf_none"),
    Row("pf_posonly", "001 Tab. 5b: position masking only", JOBS, config=PF,
        overrides=_pf(**{"posfield.content_prob": 0.0}), twin="random_vit",
        baseline="posfield"),   # 001 Tab. 5b: 0:100 against the 50:50 default
]

SUITE = dict(
    name="fmnist_dino",
    seeds=2,
    budget=(f"pre-training: {STEPS} steps x {BATCH} = {STEPS * BATCH:,} images (2 x 32 px + "
            "4 x 16 px crops each) per cell, ViT-S4; kNN / linear on CLS, 10k train images, "
            "10k test; canvas box / dense probes on 3k / 1k canvases"),
    jobs={
        "frozen": knn_linear_job(**{"eval.feature": "cls"}),
        "canvas": ("configs/eval/box_probe.py:cpu", {"eval.compare_random_init": False}),
        "rank": feature_rank_job(**{"eval.feature": "cls"}),
    },
    columns={
        "knn": ("frozen", "knn/top1", "kNN top-1"),
        "linear": ("frozen", "linear/top1", "linear top-1"),
        "box_ap50": ("canvas", "box_probe/ap50", "canvas box AP50"),
        "box_miou": ("canvas", "box_probe/box_miou", "canvas box mIoU"),
        "dense": ("canvas", "dense_probe/miou", "canvas dense mIoU"),
        # Dimensional collapse (evaluate/feature_rank.py): RankMe of the CLS
        # features (of 128 dims) and the first principal component's share.
        "rankme": ("rank", "feature_rank/rankme", "CLS RankMe"),
        "top_pc": ("rank", "feature_rank/top_pc_share", "CLS top-PC share"),
    },
    chart_columns=("knn", "linear", "box_ap50", "dense"),
    # Collapse monitors (DINO Sec. 5.3): per-sample teacher entropy near ln K
    # = 6.93 with KL(teacher || student) near 0 is the uniform collapse.
    curve_keys=("teacher_entropy", "kl_teacher_student"),
    rows=ROWS,
)


def get_config(row: str):
  """The pre-training config of one row (`--config configs/results/fmnist_dino.py:dino`)."""
  return row_config(SUITE, row, __file__)
