"""Self-distillation losses of the DINO family (DINO, iBOT, DINOv2, 001).

Arrays are crop-major, as DINO chunks its outputs: student logits [V, B, K]
(the 2 global crops first, then the local ones), teacher logits [2, B, K];
patch logits [C, B, N, K] with masks [C, B, N] (1 = masked). Every loss is
checked against a numpy version in tests/test_dino_losses.py.
"""
import jax
import jax.numpy as jnp


def teacher_temperature(step, warmup_steps, start: float, end: float):
  """DINO's teacher temperature: linear warm-up start -> end, then constant
  (DINO App. / main_dino.py; per step here, per epoch in DINO)."""
  frac = jnp.clip(step / jnp.maximum(warmup_steps, 1), 0.0, 1.0)
  return jnp.where(warmup_steps > 0, start + (end - start) * frac, end)


def centred_softmax(teacher_logits, centre, temperature):
  """DINO Alg. 1: softmax((t - C) / tau_t): centring and sharpening."""
  return jax.nn.softmax((teacher_logits.astype(jnp.float32) - centre) / temperature, axis=-1)


def sinkhorn_knopp(teacher_logits, temperature, iterations: int = 3, weights=None):
  """DINOv2 `sinkhorn_knopp_teacher` (SwAV's Sinkhorn-Knopp): logits [M, K] ->
  [M, K] assignments whose rows sum to 1 and whose columns (prototypes) are
  used equally. `weights` [M] in {0, 1} leaves rows out (DINOv2 normalises
  only over masked patches); their output rows are zero."""
  x = teacher_logits.astype(jnp.float32) / temperature
  q = jnp.exp(x - jax.lax.stop_gradient(x.max()))     # a constant factor cancels below
  w = jnp.ones(q.shape[0], q.dtype) if weights is None else weights.astype(q.dtype)
  q = q * w[:, None]
  n, k = jnp.maximum(w.sum(), 1.0), q.shape[1]
  # All rows left out (e.g. no image drew a content mask: 001 Tab. 5b's 0:100
  # run) gives all-zero targets, not 0 / 0.
  q = q / jnp.maximum(q.sum(), 1e-30)
  for _ in range(iterations):
    q = q / jnp.maximum(q.sum(0, keepdims=True), 1e-30) / k      # prototypes: mass 1/K each
    q = q / jnp.maximum(q.sum(1, keepdims=True), 1e-30) / n      # samples: mass 1/M each
  return q * n


def dino_cls_loss(student_logits, teacher_probs, student_temperature):
  """DINO Eq. 3 / Alg. 1: mean over (teacher global crop i, student crop v != i)
  of the batch-mean cross-entropy H(P_t(i), P_s(v)). Returns (loss, KL(t||s))
  where the KL monitor averages over the same pairs."""
  log_p = jax.nn.log_softmax(student_logits.astype(jnp.float32) / student_temperature, -1)
  b = log_p.shape[1]
  ce = -jnp.einsum("ibk,vbk->iv", teacher_probs, log_p) / b          # [2, V]
  n_t, n_s = ce.shape
  pair = 1.0 - jnp.eye(n_t, n_s)                                      # skip v == i
  loss = (ce * pair).sum() / pair.sum()
  ent = -(teacher_probs * jnp.log(jnp.maximum(teacher_probs, 1e-30))).sum(-1).mean(-1)  # [2]
  kl = ((ce - ent[:, None]) * pair).sum() / pair.sum()
  return loss, kl


def masked_patch_loss(student_logits, teacher_probs, mask, student_temperature):
  """iBOT Eq. 2 (001 Eq. 2, 4, 5): per image, the cross-entropy averaged over
  its masked patches (an image with no mask contributes 0), then the mean over
  all C x B images (iBOT `loss2.mean()`, DINOv2 `forward_masked`)."""
  log_p = jax.nn.log_softmax(student_logits.astype(jnp.float32) / student_temperature, -1)
  ce = -(teacher_probs * log_p).sum(-1)                             # [C, B, N]
  per_image = (ce * mask).sum(-1) / jnp.maximum(mask.sum(-1), 1.0)
  return per_image.mean()


def koleo(x, eps: float = 1e-8):
  """KoLeo (Sablayrolles et al. 2019; DINOv2 Sec. 4 `KoLeoLoss`): x [B, D] is
  L2-normalised, each sample's nearest neighbour found by dot product, and the
  loss is -mean log(||x_i - x_nn(i)|| + eps)."""
  x = x.astype(jnp.float32)
  x = x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)
  dots = x @ x.T
  dots = jnp.where(jnp.eye(x.shape[0], dtype=bool), -1.0, dots)
  nn_idx = jax.lax.stop_gradient(jnp.argmax(dots, axis=1))
  # torch.nn.PairwiseDistance(2, eps): ||a - b + eps||.
  dist = jnp.linalg.norm(x - x[nn_idx] + eps, axis=-1)
  return -jnp.log(dist + eps).mean()


def update_centre(centre, teacher_logits, momentum: float):
  """DINO Alg. 1: C <- m C + (1 - m) mean of the teacher logits over the batch
  (and crops / patches: every axis but the last)."""
  batch_mean = teacher_logits.astype(jnp.float32).reshape(-1, teacher_logits.shape[-1]).mean(0)
  return momentum * centre + (1.0 - momentum) * batch_mean[None]


def entropy_monitors(probs, weights=None):
  """Collapse monitors (DINO Sec. 5.3): the mean per-sample teacher entropy
  (-> log K: uniform collapse, the failure sharpening prevents) and the
  entropy of the batch-mean distribution (-> 0: every sample on one
  prototype, the failure centring prevents). Rows weighted by `weights`."""
  p = probs.reshape(-1, probs.shape[-1])
  w = jnp.ones(p.shape[0]) if weights is None else weights.reshape(-1).astype(jnp.float32)
  h = -(p * jnp.log(jnp.maximum(p, 1e-30))).sum(-1)
  mean_p = (p * w[:, None]).sum(0) / jnp.maximum(w.sum(), 1.0)
  return ((h * w).sum() / jnp.maximum(w.sum(), 1.0),
          -(mean_p * jnp.log(jnp.maximum(mean_p, 1e-30))).sum())
