"""The one training loop, for every method (it never asks which).

Banner sections: setup -> state (init or resume) -> the jitted sharded step
-> the loop (log, eval, checkpoint) -> export and final evaluation.

Evaluation jobs are methods too (`methods/linear_probe.py`, `finetune.py`):
a method with `predict` is scored on the eval split every
`val_every_epochs` epochs and at the end (`ssl_jax/validate.py`); one
without an `encoder` exports nothing.
"""
import os
import time

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ssl_jax import checkpoint as ckpt_lib
from ssl_jax import distributed
from ssl_jax import evaluate as eval_lib
from ssl_jax import export as export_lib
from ssl_jax import methods
from ssl_jax import metrics as metrics_lib
from ssl_jax import models
from ssl_jax import optim
from ssl_jax import sharding
from ssl_jax import validate
from ssl_jax.data import pipeline
from ssl_jax.interop import timm_vit


class NonFiniteError(RuntimeError):
  pass


def _zeros_like_spec(spec, batch: int):
  return jax.tree.map(lambda s: np.zeros((batch,) + tuple(s.shape[1:]), s.dtype.as_numpy_dtype),
                      spec)


def if_finite(finite, apply_update, old):
  """`apply_update(old)` when `finite`, else `old` unchanged.

  A `lax.cond`, so a finite step (every step but the last of a failing run)
  writes the new state once; the earlier `where(finite, new, old)` over the
  whole state read params, optimizer moments and method state twice more
  (A/B: `bench/ab_step.py --variant nan_guard_select`, 1% on the default
  job, 8 MB less peak memory; bench/README.md)."""
  return jax.lax.cond(finite, apply_update, lambda o: o, old)


def make_train_step(method, config, tx, schedule):
  """Returns step(state, constants, batch) -> (state, metrics); pure, jittable."""
  accum = int(config.optim.get("grad_accum_steps", 1) or 1)
  base_rng = jax.random.PRNGKey(config.seed)
  nan_step = int(config.get("debug_inject_nan_at_step", -1))

  def loss_and_grad(params, mstate, constants, batch, rng, step):
    def loss_fn(p):
      loss, (metrics, new_mstate) = method.loss(p, mstate, constants, batch, rng, step, config)
      loss = jnp.where(step == nan_step, jnp.nan, loss)   # test hook; -1 never matches
      return loss, (metrics, new_mstate)
    (loss, (metrics, new_mstate)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    return loss, metrics, new_mstate, grads

  def step_fn(state, constants, batch):
    step = state["step"]
    rng = jax.random.fold_in(base_rng, step)
    params, mstate = state["params"], state["method_state"]
    if accum == 1:
      loss, metrics, new_mstate, grads = loss_and_grad(params, mstate, constants, batch, rng, step)
    else:
      # Gradient accumulation: same global batch, `accum` sequential micro-batches.
      micro = jax.tree.map(lambda x: x.reshape((accum, x.shape[0] // accum) + x.shape[1:]), batch)
      def body(carry, xs):
        g_sum, l_sum, ms = carry
        mb, i = xs
        l, m, ms, g = loss_and_grad(params, ms, constants, mb, jax.random.fold_in(rng, i), step)
        return (jax.tree.map(jnp.add, g_sum, g), l_sum + l, ms), m
      zeros = jax.tree.map(jnp.zeros_like, params)
      (grads, loss, new_mstate), metrics = jax.lax.scan(
          body, (zeros, 0.0, mstate), (micro, jnp.arange(accum)))
      grads = jax.tree.map(lambda g: g / accum, grads)
      loss = loss / accum
      metrics = jax.tree.map(jnp.mean, metrics)
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & (state["bad_step"] < 0)

    def apply_update(old):
      p, opt_state, _ = old
      updates, new_opt = tx.update(grads, opt_state, p)
      new_params = optax.apply_updates(p, updates)
      return new_params, new_opt, method.update(new_mstate, new_params, step, config)

    # A non-finite step changes nothing but `bad_step`; the host stops the run
    # before any checkpoint of it is written.
    new_params, new_opt, kept_mstate = if_finite(
        finite, apply_update, (params, state["opt_state"], mstate))
    new_state = {
        "step": step + 1,
        "params": new_params,
        "opt_state": new_opt,
        "method_state": kept_mstate,
        "bad_step": jnp.where(finite | (state["bad_step"] >= 0), state["bad_step"], step),
    }
    out = dict(metrics, loss=loss, grad_norm=grad_norm, lr=schedule(step))
    return new_state, out

  return step_fn


def initial_state(mvars, tx):
  """The train state of freshly initialised method variables (step 0)."""
  return {"step": jnp.zeros((), jnp.int32), "params": mvars.params,
          "opt_state": tx.init(mvars.params), "method_state": mvars.state,
          "bad_step": jnp.full((), -1, jnp.int32)}


def jit_train_step(method, config, tx, schedule, state_sh, const_sh, data_sh, repl):
  """The trainer's compiled step (bench/ times this very program): sharded,
  the state donated (updated in place, no second copy)."""
  return jax.jit(make_train_step(method, config, tx, schedule),
                 in_shardings=(state_sh, const_sh, data_sh),
                 out_shardings=(state_sh, repl), donate_argnums=(0,))


def encoder_from_state(method, config, state) -> export_lib.Encoder:
  spec = method.encoder(config)
  variables = spec.variables(state["params"], state["method_state"])
  variables = jax.tree.map(sharding.to_host, variables)   # multi-host: a collective
  module = models.build(spec.model, "float32")
  return export_lib.Encoder(module, variables, dict(spec.model), {})


def train(config, workdir: str, devices=None):
  """Pre-trains `config.method`; resumes from `<workdir>/checkpoints` if any.

  `devices` (default: all) lets tests compare 1-device and 8-device meshes.
  """
  # ------------------------------------------------------------------ setup
  os.makedirs(workdir, exist_ok=True)
  mesh = sharding.make_mesh(config.mesh, devices)
  method = methods.get(config.method)
  data_sh = sharding.batch_sharding(mesh)
  repl = sharding.replicated(mesh)
  if config.batch_size % mesh.devices.size:
    raise ValueError(f"batch_size {config.batch_size} is not divisible by the "
                     f"{mesh.devices.size} devices of mesh {config.mesh}.")
  writer = metrics_lib.MetricsWriter(workdir)
  ckpt = ckpt_lib.Checkpointer(workdir, config.keep_checkpoints)
  it = pipeline.TrainIterator(config, method.views(config), data_sh)
  steps_per_epoch = max(1, it.steps_per_epoch)   # of every input shard (data.input_shards)
  total_steps = int(config.total_steps or round(config.num_epochs * steps_per_epoch))
  # Methods' own schedules (EMA teacher momentum) read the resolved horizon.
  config = config.copy_and_resolve_references()
  config.total_steps = total_steps
  with config.unlocked():   # main.py locks the config; this key is the trainer's, not the user's
    config.steps_per_epoch = steps_per_epoch      # epoch-based method schedules (DINO)
  tx, schedule = optim.make_optimizer(config, total_steps, steps_per_epoch)

  # ------------------------------------------------------------------ state
  spec = it._epoch_dataset(0, 0).element_spec  # pylint: disable=protected-access
  spec = {k: v for k, v in spec.items() if k != "index"}
  init_batch = _zeros_like_spec(spec, 2)
  init_rng = jax.random.PRNGKey(config.seed + 1)
  # Init on a 2-example batch as one compiled program: run eagerly it costs
  # hundreds of one-op compiles (a tiny MAE: 7.6 CPU-s vs 3.0 s). Arrays the
  # init reads from disk (frozen teachers, the export a probe reads) become
  # arguments of that program, not literals inside it (JAX hoists them).
  mvars = jax.jit(lambda rng, batch: method.init(rng, batch, config))(init_rng, init_batch)
  state = initial_state(mvars, tx)
  state_sh = sharding.tree_shardings(state, mesh, config.sharding_rules, config.fsdp_min_size)
  const_sh = sharding.tree_shardings(mvars.constants, mesh, config.sharding_rules,
                                     config.fsdp_min_size)
  constants = jax.device_put(mvars.constants, const_sh)
  latest = ckpt.latest_step()
  if latest is not None:
    abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                            state, state_sh)
    del state
    state, position = ckpt.restore(latest, abstract)
    it = pipeline.TrainIterator(config, method.views(config), data_sh, position)
    logging.info("Resumed from step %d (data position %s).", latest, position)
    writer.write(latest, "resume", data_position=position)
  else:
    state = jax.device_put(state, state_sh)
  del mvars
  start = int(jax.device_get(state["step"]))

  # ------------------------------------------------------------------ step
  step_fn = jit_train_step(method, config, tx, schedule, state_sh, const_sh, data_sh, repl)
  n_params = sum(x.size for x in jax.tree.leaves(state["params"]))
  print(f"[ssl_jax] method={config.method} params={n_params / 1e6:.2f}M "
        f"mesh={dict(mesh.shape)} steps={start}->{total_steps} "
        f"({steps_per_epoch} steps/epoch, batch {config.batch_size})", flush=True)

  validator = (validate.Validator(method, config, mesh, state_sh, const_sh)
               if method.predict is not None else None)
  val_every = int(round(float(config.get("val_every_epochs") or 0) * steps_per_epoch))

  # ------------------------------------------------------------------ loop
  # Evaluation runs on process 0 alone, over its own devices (with one
  # process: `mesh`); the other processes go on and wait at their next
  # collective. Its data is the whole split (pipeline.eval_arrays).
  evaluates = jax.process_index() == 0
  eval_mesh = sharding.process_mesh(mesh)
  eval_data = None
  t_last, step_last = time.time(), start
  step = start
  skipped = it.position()["skipped"]       # undecodable training images so far
  batches = pipeline.prefetch(it, config.data.prefetch)
  try:
    if start < total_steps:
      for batch, position in batches:
        state, m = step_fn(state, constants, batch)
        step += 1
        skipped = position["skipped"]
        done = step >= total_steps
        if step % config.log_every == 0 or done:
          m = jax.device_get(m)
          _check_finite(state, ckpt)
          now = time.time()
          ips = (step - step_last) * config.batch_size / max(now - t_last, 1e-9)
          eta = (total_steps - step) * config.batch_size / max(ips, 1e-9)
          writer.write(step, "train", **m, img_per_s=ips,
                       img_per_s_per_device=ips / mesh.devices.size,
                       epoch=step / steps_per_epoch, skipped_images=position["skipped"])
          print(f"[ssl_jax] step {step}/{total_steps} loss {float(m['loss']):.4f} "
                f"lr {float(m['lr']):.2e} {ips:.0f} img/s eta {eta / 60:.1f} min", flush=True)
          t_last, step_last = now, step
        if step % config.checkpoint_every == 0 or done:
          _check_finite(state, ckpt)
          ckpt.save(step, state, pipeline.global_position(position))   # all shards' positions
        ckpt.poll()   # a failed async save (disk full) stops the run now, not at the next save
        if validator is not None and val_every and step % val_every == 0 and not done:
          res = validator(state, constants)
          writer.write(step, "val", **res, epoch=step / steps_per_epoch)
          print(f"[ssl_jax] step {step} validation " + _top_line(res), flush=True)
        if (config.eval_every and step % config.eval_every == 0 and not done
            and method.encoder is not None):
          enc = encoder_from_state(method, config, state)   # every process (FSDP: a gather)
          if evaluates:
            eval_data = eval_data or eval_lib.EvalData.load(config)
            res = eval_lib.evaluate(config, enc, eval_mesh, eval_data, protocols=["knn"])
            writer.write(step, "eval", **res)
            print(f"[ssl_jax] step {step} kNN top-1 {res['knn/top1']:.2f} "
                  f"(random init {res.get('knn/top1_random_init', float('nan')):.2f})",
                  flush=True)
          distributed.barrier("ssl_jax kNN during training")   # the others sleep meanwhile
        if done:
          break
  except BaseException:
    batches.close()
    ckpt.close(quiet=True)   # commit in-flight saves, stop Orbax's threads, keep this error
    raise
  finally:
    batches.close()  # stop and join the prefetch worker: no abort at interpreter exit
    ckpt.wait()      # let in-flight async saves commit, whatever stopped us

  # ------------------------------------------------------------------ export + eval
  export_dir = encoder = None
  if method.encoder is not None:
    encoder = encoder_from_state(method, config, state)
    export_dir = export_lib.save(os.path.join(workdir, "export"), encoder.model_cfg,
                                 encoder.variables, info={"method": config.method, "step": step,
                                                          "config": config.to_json_best_effort()})
    if timm_vit.exportable(encoder.model_cfg) and jax.process_index() == 0:
      # For PyTorch users: timm VisionTransformer names and layouts.
      timm_vit.export_encoder(encoder._replace(info={"image_size": config.data.image_size}),
                              export_dir)
  ckpt.close()
  results = {}
  if validator is not None:
    # Kind "eval" like eval_job's records: the results suite reads these keys.
    results = validator(state, constants)
    writer.write(step, "eval", **results, encoder=config.get("encoder"))
    print(f"[ssl_jax] final validation at step {step} ({config.data.name} "
          f"{config.data.eval_split}): " + _top_line(results), flush=True)
  if config.eval.protocols and encoder is not None and evaluates:
    eval_data = eval_data or eval_lib.EvalData.load(config)
    results = eval_lib.evaluate(config, encoder, eval_mesh, eval_data)
    writer.write(step, "final_eval", **results, skipped_images=eval_data.skipped_images)
    print(f"[ssl_jax] final evaluation at step {step} ({config.data.name}, "
          f"feature={config.eval.feature}):\n" + eval_lib.format_table(results), flush=True)
  # No process leaves (and shuts the distributed runtime down) before process 0's evaluation ends.
  distributed.barrier("ssl_jax final evaluation")
  if export_dir is not None:
    print(f"[ssl_jax] encoder exported to {export_dir}", flush=True)
  print(f"[ssl_jax] skipped_images: {skipped} undecodable in training"
        + (f", {eval_data.skipped_images} in evaluation" if eval_data is not None else ""),
        flush=True)
  return results


def _top_line(res) -> str:
  top = {k.rsplit("/", 1)[1]: v for k, v in res.items() if "/" in k}
  return (f"top-1 {top['top1']:.2f} top-5 {top['top5']:.2f} loss {top['val_loss']:.4f} "
          f"({top['val_examples']} images)")


def _check_finite(state, ckpt):
  bad = int(jax.device_get(state["bad_step"]))
  if bad >= 0:
    ckpt.wait()
    last = ckpt.latest_step()
    kept = (f"The last good checkpoint (step {last}) is intact in {ckpt.dir}"
            if last is not None else f"No checkpoint was saved yet (in {ckpt.dir})")
    # `bad_step` is the 0-based step counter; progress lines count updates from 1.
    raise NonFiniteError(
        f"Loss or gradient became NaN/Inf at step {bad + 1}; training stopped without "
        f"applying it. {kept}; lower the learning rate or enable optim.clip_grad_norm, "
        "then rerun.")
