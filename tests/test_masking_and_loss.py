"""MAE masking keeps exactly the right tokens; the loss equals a hand computation."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ssl_jax.methods import mae
from ssl_jax.ops import masking, patches


def test_random_masking_keeps_exact_count_per_sample():
  tm = masking.random_masking(jax.random.PRNGKey(0), 64, 49, 0.75)
  keep = int(49 * 0.25)
  assert tm.keep_idx.shape == (64, keep)
  np.testing.assert_array_equal(np.asarray(tm.mask.sum(1)), np.full(64, 49 - keep))
  # visible indices are exactly the unmasked positions, and distinct
  for b in range(64):
    kept = np.sort(np.asarray(tm.keep_idx[b]))
    np.testing.assert_array_equal(kept, np.where(np.asarray(tm.mask[b]) == 0)[0])
  # per-sample masks differ (MAE's per-sample shuffle)
  assert len({tuple(np.asarray(m)) for m in tm.mask}) > 60


def test_restore_idx_unshuffles():
  tm = masking.random_masking(jax.random.PRNGKey(3), 4, 16, 0.5)
  x = jnp.arange(16.0)[None, :, None].repeat(4, 0)
  shuffled = jnp.concatenate([masking.gather_tokens(x, tm.keep_idx),
                              jnp.zeros((4, 8, 1))], 1)
  restored = jnp.take_along_axis(shuffled, tm.restore_idx[..., None], 1)
  np.testing.assert_array_equal(np.asarray(restored[..., 0] * (1 - tm.mask)),
                                np.asarray(x[..., 0] * (1 - tm.mask)))


def test_patchify_roundtrip():
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 12, 3))
  p = patches.patchify(x, 4)
  assert p.shape == (2, 6, 48)
  np.testing.assert_array_equal(np.asarray(patches.unpatchify(p, 4, 2, 3)), np.asarray(x))
  # first patch = top-left 4x4 block in (row, col, channel) order, as MAE
  np.testing.assert_array_equal(np.asarray(p[0, 0]), np.asarray(x[0, :4, :4]).reshape(-1))


def test_mae_loss_matches_hand_computation():
  rng = np.random.default_rng(0)
  images = rng.normal(size=(1, 4, 4, 3)).astype(np.float32)     # 4 patches of 2x2
  pred = rng.normal(size=(1, 4, 12)).astype(np.float32)
  mask = np.array([[1.0, 0.0, 1.0, 0.0]], np.float32)
  cfg = ml_collections.ConfigDict({"model": {"patch_size": 2}, "mae": {"norm_pix_loss": True}})
  got = float(mae.reconstruction_loss(jnp.asarray(pred), jnp.asarray(images), jnp.asarray(mask), cfg))
  losses = []
  for idx, (r, c) in enumerate([(0, 0), (0, 2), (2, 0), (2, 2)]):
    t = images[0, r:r + 2, c:c + 2].reshape(-1)
    t = (t - t.mean()) / np.sqrt(t.var(ddof=1) + 1e-6)
    losses.append(np.mean((pred[0, idx] - t) ** 2))
  want = (losses[0] + losses[2]) / 2
  np.testing.assert_allclose(got, want, rtol=1e-5)
  cfg.mae.norm_pix_loss = False
  got_raw = float(mae.reconstruction_loss(jnp.asarray(pred), jnp.asarray(images), jnp.asarray(mask), cfg))
  raw = [np.mean((pred[0, i] - images[0, r:r + 2, c:c + 2].reshape(-1)) ** 2)
         for i, (r, c) in enumerate([(0, 0), (0, 2), (2, 0), (2, 2)])]
  np.testing.assert_allclose(got_raw, (raw[0] + raw[2]) / 2, rtol=1e-5)
