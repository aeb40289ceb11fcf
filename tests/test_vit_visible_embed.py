"""MAE-style encoders embed only the visible patches (models/vit.py); the
result must equal embedding every patch and gathering after (the old path),
for each position embedding, a given position field and RoPE coordinates."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax.models import vit as vit_lib


@pytest.mark.parametrize("posemb,with_pos", [("sincos2d", False), ("learn", False),
                                             ("rope", False), ("sincos2d", True)])
def test_visible_only_embedding_equals_embed_then_gather(posemb, with_pos, monkeypatch):
  model = vit_lib.ViT(width=32, depth=1, num_heads=2, patch_size=4, posemb=posemb)
  images = jax.random.normal(jax.random.PRNGKey(0), (3, 16, 12, 3))
  n = (16 // 4) * (12 // 4)
  keep = jnp.stack([jax.random.permutation(jax.random.PRNGKey(i), n)[:5] for i in range(3)])
  pos = jax.random.normal(jax.random.PRNGKey(1), (3, n, 32)) if with_pos else None
  params = model.init(jax.random.PRNGKey(2), images, keep_idx=keep, pos=pos)
  apply = lambda p: model.apply(p, images, keep_idx=keep, pos=pos)["tokens"]
  fast = apply(params)
  monkeypatch.setattr(vit_lib, "VISIBLE_ONLY_EMBED", False)
  slow = apply(params)
  assert fast.shape == (3, 6, 32)
  np.testing.assert_allclose(fast, slow, rtol=1e-5, atol=1e-5)
  # And the visible patches really are the kept ones: the patch tokens differ
  # from those of another draw.
  other = model.apply(params, images, keep_idx=jnp.roll(keep, 1, axis=1), pos=pos)["tokens"]
  assert not np.allclose(other, slow, atol=1e-3)


def test_visible_only_embedding_gradient_equals(monkeypatch):
  model = vit_lib.ViT(width=32, depth=1, num_heads=2, patch_size=4, posemb="learn")
  images = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 1))
  keep = jnp.array([[0, 3], [2, 1]])
  params = model.init(jax.random.PRNGKey(2), images, keep_idx=keep)
  grad = lambda: jax.grad(lambda p: jnp.sum(
      model.apply(p, images, keep_idx=keep)["tokens"] ** 2))(params)
  g_fast = grad()
  monkeypatch.setattr(vit_lib, "VISIBLE_ONLY_EMBED", False)
  g_slow = grad()
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), g_fast, g_slow)
