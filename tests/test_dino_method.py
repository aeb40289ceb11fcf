"""The DINO engine: the teacher gets no gradient, the student does, EMA
update with cosine momentum, clear errors; 1 vs 8 simulated devices give the
same losses for the whole family's richest member (posfield: multi-crop,
masks of both kinds, KoLeo, Sinkhorn-Knopp, the field)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssl_jax import methods
from tests.conftest import config_module


def _batch(c, b=4, seed=0):
  k = jax.random.split(jax.random.PRNGKey(seed), 4)
  s, ls, n = c.data.image_size, c.data.local_crop_size, c.data.num_local_crops
  boxes = jnp.concatenate([jax.random.uniform(k[2], (b, 2 + n, 2)) * 8,
                           8 + jax.random.uniform(k[3], (b, 2 + n, 2)) * 8], -1)
  return {"global_crops": jax.random.normal(k[0], (b, 2, s, s, 3)),
          "local_crops": jax.random.normal(k[1], (b, n, ls, ls, 3)),
          "global_boxes": boxes[:, :2], "local_boxes": boxes[:, 2:],
          "global_flips": jnp.zeros((b, 2)).at[:, 1].set(1.0), "local_flips": jnp.zeros((b, n)),
          "image_hw": jnp.full((b, 2), 16.0)}


def _loss_and_grads(method, c, batch):
  """jit(value_and_grad) of the loss w.r.t. (params, state), metrics and new state."""
  def f(params, state, batch):
    def inner(p, s):
      loss, (m, new_state) = method.loss(p, s, {}, batch, jax.random.PRNGKey(1), 2, c)
      return loss, (m, new_state)
    (loss, (m, new_state)), grads = jax.value_and_grad(inner, argnums=(0, 1), has_aux=True)(
        params, state)
    return loss, m, new_state, grads
  return jax.jit(f)


@pytest.fixture(scope="module")
def posfield_setup():
  c = config_module("posfield.py").get_config("tiny")
  c.total_steps = 6
  method = methods.get("posfield")
  batch = _batch(c, b=8)
  mvars = jax.jit(lambda r, b: method.init(r, b, c))(jax.random.PRNGKey(0), batch)
  out = _loss_and_grads(method, c, batch)(mvars.params, mvars.state, batch)
  return c, method, batch, mvars, out


def test_teacher_gets_no_gradient_student_does(posfield_setup):
  _, _, _, _, (_, _, _, (g_student, g_state)) = posfield_setup
  assert all(not np.asarray(x).any() for x in jax.tree.leaves(g_state["teacher"]))
  nonzero = lambda t: np.abs(np.asarray(t)).max() > 0
  assert nonzero(g_student["encoder"]["patch_embed"]["kernel"])
  assert nonzero(g_student["encoder"]["mask_token"])            # content masking
  assert nonzero(g_student["pos_mask_token"])                   # position masking
  assert nonzero(g_student["pos_embedding_field"])
  assert set(g_student["heads"]) == {"cls", "patch", "pos"}     # separate heads (Tab. 6)
  for h in g_student["heads"].values():
    assert nonzero(h["last_layer"]["kernel"])


def test_loss_metrics_and_ema_update(posfield_setup):
  c, method, _, mvars, (loss, m, new_state, _) = posfield_setup
  m = {k: float(v) for k, v in m.items()}
  for key in ("dino_loss", "patch_loss", "pos_loss", "koleo_loss", "teacher_entropy",
              "teacher_mean_entropy", "kl_teacher_student", "centre_norm"):
    assert np.isfinite(m[key]), key
  # Eq. 6 with lambda_KoLeo = 1.
  assert float(loss) == pytest.approx(m["dino_loss"] + m["patch_loss"] + m["pos_loss"]
                                      + m["koleo_loss"], rel=1e-5)
  # Warm-up 0.04 -> 0.07 over 30 "epochs" of total_steps / num_epochs steps; step 2.
  warm = 30 * c.total_steps / c.num_epochs
  assert m["teacher_temp"] == pytest.approx(0.04 + 0.03 * 2 / warm, rel=1e-5)
  # Centres moved towards the teacher's logits (EMA 0.9), the teacher did not.
  assert float(jnp.abs(new_state["centres"]["cls"]).max()) > 0
  params = jax.tree.map(lambda p: p + 1.0, mvars.params)
  upd = method.update(new_state, params, 0, c)
  t0 = np.asarray(new_state["teacher"]["encoder"]["cls_token"])
  np.testing.assert_allclose(np.asarray(upd["teacher"]["encoder"]["cls_token"]),
                             0.996 * t0 + 0.004 * (np.asarray(mvars.params["encoder"]["cls_token"]) + 1),
                             rtol=1e-5, atol=1e-6)
  late = method.update(new_state, params, c.total_steps, c)           # momentum -> 1
  np.testing.assert_allclose(np.asarray(late["teacher"]["encoder"]["cls_token"]), t0, atol=1e-6)


def test_one_vs_eight_devices_same_loss_grads_and_state(posfield_setup):
  """The batch split over 8 simulated devices: the global-batch statistics
  (centres, KoLeo, Sinkhorn-Knopp) and the gradients must not change."""
  from jax.sharding import Mesh, NamedSharding, PartitionSpec as P  # pylint: disable=g-import-not-at-top
  assert len(jax.devices()) == 8, "conftest must simulate 8 CPU devices"
  c, method, batch, mvars, (loss, m, new_state, grads) = posfield_setup
  mesh = Mesh(np.array(jax.devices()), ("data",))
  sharded = jax.device_put(batch, NamedSharding(mesh, P("data")))
  repl = NamedSharding(mesh, P())
  params, state = jax.device_put((mvars.params, mvars.state), repl)
  loss8, m8, state8, grads8 = _loss_and_grads(method, c, sharded)(params, state, sharded)
  assert float(loss8) == pytest.approx(float(loss), rel=2e-5)
  for k in ("dino_loss", "patch_loss", "pos_loss", "koleo_loss"):
    assert float(m8[k]) == pytest.approx(float(m[k]), rel=2e-5), k
  # Summation order differs across shards: tolerance relative to each array's scale.
  close = lambda a, b: np.testing.assert_allclose(
      np.asarray(a), np.asarray(b), rtol=1e-3, atol=1e-3 * np.abs(np.asarray(b)).max() + 1e-6)
  jax.tree.map(close, state8["centres"], new_state["centres"])
  jax.tree.map(close, grads8[0], grads[0])


def test_dino_rejects_patch_loss_without_masks():
  c = config_module("dino.py").get_config("tiny")
  c.dino.patch_loss_weight = 1.0
  method = methods.get("dino")
  batch = _batch(c, b=2)
  mvars = jax.eval_shape(lambda: method.init(jax.random.PRNGKey(0), batch, c))
  with pytest.raises(ValueError, match="'ibot', 'dinov2' or 'posfield'"):
    jax.eval_shape(lambda p, s: method.loss(p, s, {}, batch, jax.random.PRNGKey(1), 0, c),
                   mvars.params, mvars.state)


@pytest.mark.parametrize("name,in1k", [("dino", ["vit_s16_100ep"]), ("ibot", ["vit_s16"]),
                                       ("dinov2", ["vit_s16_in1k", "vit_b16_in1k"]),
                                       ("posfield", ["vit_s16_in1k", "vit_b16_in1k"])])
def test_configs_build_and_tiny_variant_traces(name, in1k):
  module = config_module(f"{name}.py")
  for arg in ["cpu"] + in1k:
    c = module.get_config(arg)
    assert c.method == name and c.data.augment == "dino"
  big = module.get_config(in1k[0])
  assert big.data.image_size == 224 and big.data.local_crop_size == 96
  assert big.dino.out_dim in (8192, 65536) and big.optim.weight_decay_end == 0.4
  with pytest.raises(ValueError, match="Valid: tiny, cpu"):
    module.get_config("vit_h14")
  c = module.get_config("tiny")
  method = methods.get(name)
  assert method.views(c) == "multi_crop"
  batch = _batch(c, b=2)
  mvars = jax.eval_shape(lambda: method.init(jax.random.PRNGKey(0), batch, c))
  c.total_steps = 6
  loss, (m, _) = jax.eval_shape(
      lambda p, s: method.loss(p, s, {}, batch, jax.random.PRNGKey(1), 0, c),
      mvars.params, mvars.state)
  assert loss.shape == () and "dino_loss" in m
  assert ("patch_loss" in m) == (name != "dino") and ("koleo_loss" in m) == (name in ("dinov2", "posfield"))
