"""Frozen-feature box probe on the multi-object canvas: the toy stand-in for
001's COCO detection table (Tab. 1, 3-5).

A 1x1 convolution over the frozen patch-token map predicts, per patch, an
objectness logit, the FCOS distances (l, t, r, b) from the patch centre
to the four sides of the box it lies in (Tian et al. 2019, FCOS Eq. 1; a
centre inside several boxes belongs to the smallest, as FCOS) and FCOS's
centre-ness (Eq. 3), which down-weights boxes regressed from patches far
from their object's centre. Decoding scores each patch by objectness x
centre-ness (FCOS Sec. 3.3), keeps those above `score_threshold`, turns
each into a box and runs greedy NMS. Scores are class-agnostic COCO-style box AP (all-
point interpolated precision-recall area, greedy matching by score) at IoU
0.5 and 0.75 and averaged over 0.5:0.05:0.95, and `box_miou`, the mean over
ground-truth boxes of the best IoU with a kept detection (0 when none).

Deviations from FCOS (named): no FPN, one level, no class scores;
objectness is a sigmoid cross-entropy (not focal) and the box loss is L1 on
distances divided by the image side (not IoU loss), which a linear head
fits stably. Features are standardised with train statistics (MAE's linear
probe puts a BatchNorm without affine before its head for the same reason).
"""
from typing import Dict, List, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ssl_jax.evaluate import canvas_data
from ssl_jax.evaluate import decoder_probe
from ssl_jax.evaluate import features as features_lib

IOU_THRESHOLDS = tuple(np.round(np.arange(0.5, 0.96, 0.05), 2))


# --- targets and decoding (FCOS Eq. 1) -------------------------------------------


def patch_centres(grid: Tuple[int, int], image_size: Tuple[int, int]) -> np.ndarray:
  """[gh * gw, 2] (y, x) pixel centres of the row-major patch grid."""
  gh, gw = grid
  ys = (np.arange(gh) + 0.5) * image_size[0] / gh
  xs = (np.arange(gw) + 0.5) * image_size[1] / gw
  return np.stack(np.meshgrid(ys, xs, indexing="ij"), -1).reshape(-1, 2).astype(np.float32)


def assign_targets(boxes: np.ndarray, centres: np.ndarray):
  """boxes [N, M, 4] (y0, x0, y1, x1; rows of -1 unused), centres [P, 2] ->
  objectness [N, P] in {0, 1} and distances [N, P, 4] (l, t, r, b) in pixels
  to the smallest box whose interior holds the centre (zeros elsewhere)."""
  boxes = np.asarray(boxes, np.float32)
  cy, cx = centres[None, :, None, 0], centres[None, :, None, 1]         # [1, P, 1]
  y0, x0, y1, x1 = (boxes[:, None, :, i] for i in range(4))            # [N, 1, M]
  ltrb = np.stack([cx - x0, cy - y0, x1 - cx, y1 - cy], -1)            # [N, P, M, 4]
  valid = (boxes[:, None, :, 2] > boxes[:, None, :, 0]) & (ltrb.min(-1) > 0)
  area = np.where(valid, (y1 - y0) * (x1 - x0), np.inf)
  best = area.argmin(-1)                                               # [N, P]
  obj = valid.any(-1)
  dist = np.take_along_axis(ltrb, best[..., None, None], 2)[:, :, 0]
  return obj.astype(np.float32), np.where(obj[..., None], dist, 0.0).astype(np.float32)


def centerness(dist: np.ndarray) -> np.ndarray:
  """FCOS Eq. 3: sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b)), [..., 4] -> [...]."""
  d = np.maximum(np.asarray(dist, np.float64), 1e-12)
  l, t, r, b = d[..., 0], d[..., 1], d[..., 2], d[..., 3]
  return np.sqrt(np.minimum(l, r) / np.maximum(l, r) * np.minimum(t, b) / np.maximum(t, b))


def decode(dist: np.ndarray, centres: np.ndarray, image_size: Tuple[int, int]) -> np.ndarray:
  """(l, t, r, b) [..., P, 4] at centres [P, 2] -> boxes (y0, x0, y1, x1), clipped."""
  d = np.maximum(np.asarray(dist, np.float32), 0.0)
  cy, cx = centres[..., 0], centres[..., 1]
  boxes = np.stack([cy - d[..., 1], cx - d[..., 0], cy + d[..., 3], cx + d[..., 2]], -1)
  hi = np.array([image_size[0], image_size[1]] * 2, np.float32)
  return np.clip(boxes, 0.0, hi)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float = 0.5,
        max_detections: int = 100) -> np.ndarray:
  """Greedy non-maximum suppression: indices kept, highest score first."""
  order = np.argsort(-np.asarray(scores), kind="stable")
  keep = []
  while order.size and len(keep) < max_detections:
    i = order[0]
    keep.append(i)
    rest = order[1:]
    order = rest[canvas_data.box_iou(boxes[i], boxes[rest]) <= iou_threshold]
  return np.asarray(keep, np.int64)


def detect(scores, dist, centres, image_size, score_threshold: float = 0.05,
           nms_iou: float = 0.5, max_detections: int = 100):
  """One image: per-patch scores [P] and distances [P, 4] -> (boxes, scores)."""
  scores = np.asarray(scores)
  boxes = decode(dist, centres, image_size)
  sel = np.flatnonzero(scores >= score_threshold)
  keep = sel[nms(boxes[sel], scores[sel], nms_iou, max_detections)]
  return boxes[keep], scores[keep]


# --- scores ----------------------------------------------------------------------


def match_detections(boxes: np.ndarray, scores: np.ndarray, gt: np.ndarray,
                     iou_threshold: float) -> np.ndarray:
  """One image: true-positive flags of its detections. In score order, each
  takes the unmatched ground truth it overlaps most if that IoU >= threshold
  (COCO / VOC greedy matching: a duplicate of a matched box is a false
  positive). Matching never looks across images, so it is done per image."""
  tp = np.zeros(len(scores), bool)
  if not len(gt) or not len(scores):
    return tp
  ious = canvas_data.box_iou(np.asarray(boxes)[:, None], np.asarray(gt)[None])   # [nd, ng]
  used = np.zeros(len(gt), bool)
  for d in np.argsort(-np.asarray(scores), kind="stable"):
    row = np.where(used, -1.0, ious[d])
    k = int(np.argmax(row))
    if row[k] >= iou_threshold:
      used[k] = tp[d] = True
  return tp


def average_precision(detections: Sequence[Tuple[np.ndarray, np.ndarray]],
                      gt_boxes: Sequence[np.ndarray], iou_threshold: float = 0.5) -> float:
  """Class-agnostic AP over a dataset: detections matched per image
  (`match_detections`), then pooled and sorted by score; area under the
  all-point interpolated precision-recall curve (VOC 2010+)."""
  num_gt = sum(len(g) for g in gt_boxes)
  if num_gt == 0:
    raise ValueError("average_precision needs at least one ground-truth box.")
  scores = np.concatenate([np.asarray(s, np.float64) for _, s in detections] + [np.zeros(0)])
  tp = np.concatenate([match_detections(b, s, g, iou_threshold)
                       for (b, s), g in zip(detections, gt_boxes)] + [np.zeros(0, bool)])
  tp = tp[np.argsort(-scores, kind="stable")].astype(np.float64)
  ctp = np.cumsum(tp)
  recall = np.concatenate([[0.0], ctp / num_gt])
  precision = np.concatenate([[1.0], ctp / np.arange(1, len(tp) + 1)])
  precision = np.maximum.accumulate(precision[::-1])[::-1]           # interpolated
  return float(np.sum((recall[1:] - recall[:-1]) * precision[1:]))


def matched_iou(detections, gt_boxes) -> float:
  """Mean over ground-truth boxes of the best IoU with a detection of its image."""
  best = []
  for (boxes, _), g in zip(detections, gt_boxes):
    for gb in g:
      best.append(float(canvas_data.box_iou(gb, boxes).max()) if len(boxes) else 0.0)
  return float(np.mean(best)) if best else 0.0


def score_detections(detections, gt_boxes) -> Dict[str, float]:
  aps = {t: average_precision(detections, gt_boxes, t) for t in IOU_THRESHOLDS}
  return {"ap": 100.0 * float(np.mean(list(aps.values()))), "ap50": 100.0 * aps[0.5],
          "ap75": 100.0 * aps[0.75], "box_miou": 100.0 * matched_iou(detections, gt_boxes)}


def gt_lists(boxes: np.ndarray) -> List[np.ndarray]:
  """[N, M, 4] with -1 padding -> per-image arrays of real boxes."""
  return [b[b[:, 2] > b[:, 0]] for b in np.asarray(boxes)]


# --- the probe -------------------------------------------------------------------


def train_box_head(feats, obj, dist, image_side: float, epochs: int = 30, lr: float = 1e-3,
                   batch_size: int = 128, box_weight: float = 5.0, use_centerness: bool = True,
                   seed: int = 0):
  """Fits the 1x1 conv (a [C, 6] linear map per patch: objectness, l, t, r,
  b, centre-ness) on frozen features [N, P, C]; returns a jitted
  predict(f [n, P, C]) -> (scores, distances px) and the last epoch's loss."""
  feats = np.asarray(feats, np.float32)
  mean, std = feats.mean((0, 1)), feats.std((0, 1)) + 1e-6     # numpy: no eager XLA ops
  ctr = jnp.asarray(np.where(obj > 0, centerness(dist), 0.0), jnp.float32)
  obj, dist = jnp.asarray(obj), jnp.asarray(np.asarray(dist) / image_side)
  n, _, c = feats.shape
  feats = jnp.asarray(feats)
  batch_size = min(batch_size, n)
  steps = max(1, n // batch_size)
  tx = optax.adam(optax.cosine_decay_schedule(lr, epochs * steps))
  rng = np.random.default_rng(seed)
  params = {"w": jnp.asarray(rng.normal(0, 0.01, (c, 6)), jnp.float32), "b": jnp.zeros(6)}
  opt_state = jax.jit(tx.init)(params)

  def head(p, f):
    return jnp.einsum("npc,ck->npk", (f - mean) / std, p["w"]) + p["b"]

  def loss_fn(p, f, o, d, ct):
    out = head(p, f)
    npos = jnp.maximum(o.sum(), 1.0)
    bce = optax.sigmoid_binary_cross_entropy(out[..., 0], o).mean()
    l1 = (jnp.abs(out[..., 1:5] - d).sum(-1) * o).sum() / npos
    ctr_loss = (optax.sigmoid_binary_cross_entropy(out[..., 5], ct) * o).sum() / npos
    return bce + box_weight * l1 + ctr_loss

  @jax.jit
  def epoch(carry, perm):
    def step(cr, idx):
      p, s = cr
      loss, g = jax.value_and_grad(loss_fn)(p, feats[idx], obj[idx], dist[idx], ctr[idx])
      u, s = tx.update(g, s, p)
      return (optax.apply_updates(p, u), s), loss
    return jax.lax.scan(step, carry, perm[:steps * batch_size].reshape(steps, batch_size))

  carry, losses = (params, opt_state), jnp.zeros(1)
  for _ in range(epochs):
    carry, losses = epoch(carry, jnp.asarray(rng.permutation(n)))
  params = carry[0]

  @jax.jit
  def predict(f):
    out = head(params, f)
    score = jax.nn.sigmoid(out[..., 0])
    if use_centerness:
      score = score * jax.nn.sigmoid(out[..., 5])
    return score, out[..., 1:5] * image_side
  return predict, float(np.mean(np.asarray(losses)))


def box_probe(train_f, train_boxes, test_f, test_boxes, grid, image_size, cfg) -> Dict[str, float]:
  """train_f / test_f [N, P, C] frozen patch features on a grid over images
  of `image_size`; boxes [N, M, 4] (-1 padding)."""
  centres = patch_centres(grid, image_size)
  obj, dist = assign_targets(train_boxes, centres)
  predict, final_loss = train_box_head(
      train_f, obj, dist, float(max(image_size)), epochs=cfg.get("epochs", 30),
      lr=cfg.get("lr", 1e-3), batch_size=cfg.get("batch_size", 128),
      box_weight=cfg.get("box_weight", 5.0), use_centerness=cfg.get("centerness", True),
      seed=cfg.get("seed", 0))
  def scores_and_dist(f):
    s, d = predict(f)
    return jnp.concatenate([s[..., None], d], -1)                    # [n, P, 5]
  both = decoder_probe.predict_in_batches(scores_and_dist, np.asarray(test_f, np.float32), 256)
  dets = [detect(b[:, 0], b[:, 1:], centres, image_size, cfg.get("score_threshold", 0.05),
                 cfg.get("nms_iou", 0.5), cfg.get("max_detections", 100)) for b in both]
  res = score_detections(dets, gt_lists(test_boxes))
  res["final_loss"] = final_loss
  return res


def defaults() -> Dict:
  """The CPU recipe: 3k / 1k canvases of 32 px, 2-3 items of 10-18 px."""
  return dict(num_train=3000, num_test=1000, image_size=None, num_items=(2, 3), scale=(10, 18),
              max_iou=0.2, seed=0, block=-1, epochs=30, lr=1e-3, batch_size=128,
              box_weight=5.0, centerness=True, score_threshold=0.05, nms_iou=0.5, max_detections=100,
              feature_batch_size=256)


def run(config, encoder, data, mesh) -> Dict[str, float]:
  """Protocol "box_probe": canvases at the classification images' size
  (`config.eval.box_probe.image_size` overrides) from
  `config.eval.box_probe`; `data` only gives that size."""
  cfg = dict(defaults(), **dict(config.eval.get("box_probe") or {}))
  if cfg["image_size"] is None:
    cfg["image_size"] = int(data.test_images.shape[1])
  kw = canvas_data.canvas_kwargs(cfg)
  tr = canvas_data.fashion_mnist_canvases("train", int(cfg["num_train"]), **kw)
  te = canvas_data.fashion_mnist_canvases("test", int(cfg["num_test"]), **kw)
  bs = int(cfg["feature_batch_size"])
  ftr, fte = features_lib.extract_many(encoder, [tr.normalised(), te.normalised()], "patch",
                                       cfg["block"], bs, mesh)
  size = tr.images.shape[1:3]
  grid = decoder_probe.token_grid(ftr.shape[1], size)
  return box_probe(ftr, tr.boxes, fte, te.boxes, grid, size, cfg)
