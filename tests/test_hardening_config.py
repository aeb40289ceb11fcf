"""Every bad setting fails before any data is read, in one line naming the
valid choices (issue 12, items 3 and 4)."""
import os

import pytest

from ssl_jax import config_check, main
from tests.conftest import tiny_mae_config
from tests.test_hardening_shutdown import ROOT, run_main

ConfigError = config_check.ConfigError

BAD = [
    # (override, message)
    (dict(keep_checkpoints=0), r"keep_checkpoints=0 must be an integer >= 1"),
    (dict(total_steps=0), r"total_steps=0 must be an integer >= 1"),
    (dict(total_steps=-5), r"total_steps=-5 must be an integer >= 1"),
    (dict(total_steps=None, num_epochs=-1.0), r"num_epochs=-1.0 must be >= 0"),
    (dict(log_every=0), r"log_every=0 must be an integer >= 1"),
    (dict(checkpoint_every=0), r"checkpoint_every=0 must be"),
    (dict(batch_size=0), r"batch_size=0 must be"),
    (dict(eval_every=-1), r"eval_every=-1 must be an integer >= 0"),
    (dict(batch_size=12), r"batch_size=12 is not divisible by the 8 devices"),
    (dict(**{"optim.grad_accum_steps": 3}), r"not divisible by optim.grad_accum_steps=3"),
    (dict(batch_size=32, **{"optim.grad_accum_steps": 8}),
     r"grad_accum_steps=8 micro-batches that each divide over 8 devices; .* multiple of 64"),
    (dict(**{"optim.grad_accum_steps": 0}), r"optim.grad_accum_steps=0 must be"),
    (dict(method="maee"), r"method='maee' is not known. Did you mean 'mae'\? Valid choices: .*mae"),
    (dict(mode="pretrian"), r"mode='pretrian' .*Did you mean 'pretrain'\? Valid choices: pretrain, train, eval"),
    (dict(**{"optim.name": "adam"}), r"optim.name='adam' .*Valid choices: adamw, sgd, lars"),
    (dict(**{"eval.protocols": ("knn", "linaer")}),
     r"eval.protocols entry='linaer' is not known. Did you mean 'linear'\? Valid choices: .*knn"),
    (dict(**{"eval.feature": "clss"}), r"eval.feature='clss' .*Valid choices: cls, mean, patch"),
    (dict(**{"eval.block": -2}), r"eval.block=-2"),
    (dict(**{"data.image_size": 0}), r"data.image_size=0"),
    (dict(mode="eval"), r"eval mode needs --config.encoder"),
    (dict(mode="eval", encoder="/no/such/export"), r"does not exist"),
]


def test_good_config_passes():
  config_check.check(tiny_mae_config(), main.MODES, device_count=8)
  # num_epochs=0: export the initialisation (the results suite's random-init twins).
  config_check.check(tiny_mae_config(total_steps=None, num_epochs=0.0), main.MODES,
                     device_count=8)


@pytest.mark.parametrize("overrides,message", BAD, ids=[str(o) for o, _ in BAD])
def test_bad_setting_is_one_clear_line(overrides, message):
  c = tiny_mae_config(**overrides)
  with pytest.raises(ConfigError, match=message) as e:
    config_check.check(c, main.MODES, device_count=8)
  assert "\n" not in str(e.value)


def test_registered_names_are_read_not_hard_coded():
  """A protocol registered later (another helper's) is valid at once."""
  from ssl_jax import evaluate  # pylint: disable=g-import-not-at-top
  c = tiny_mae_config(**{"eval.protocols": ("hardening_test_protocol",)})
  with pytest.raises(ConfigError):
    config_check.check(c, main.MODES, device_count=8)
  evaluate.PROTOCOLS.register("hardening_test_protocol", lambda *a: {})
  try:
    config_check.check(c, main.MODES, device_count=8)
  finally:
    evaluate.PROTOCOLS._items.pop("hardening_test_protocol")  # pylint: disable=protected-access


MAE = os.path.join(ROOT, "configs", "mae.py")


def test_unknown_override_names_section_and_valid_keys():
  msg = config_check.unknown_override(["prog", "--config", MAE + ":vit_tiny",
                                       "--config.batch_size=8", "--config.data.nme=x"])
  assert msg.startswith("unknown config key --config.data.nme: config.data has no 'nme'. "
                        "Did you mean 'name'? Valid keys of config.data: augment, ")
  msg = config_check.unknown_override(["prog", f"--config={MAE}", "--config.eval.knn.kk=3"])
  assert "config.eval.knn has no 'kk'. Did you mean 'k'? Valid keys of config.eval.knn: " \
         "block, k, ks, stream, temperature." in msg
  msg = config_check.unknown_override(["prog", f"--config={MAE}", "--config.nonexistent=1"])
  assert "config has no 'nonexistent'" in msg and "batch_size" in msg
  assert config_check.unknown_override(["prog", f"--config={MAE}", "--config.seed=1"]) is None
  assert "not found" in config_check.config_file_error(["prog", "--config", "nope.py:x"])


def test_command_line_errors_are_one_line_and_exit_1(tmp_path):
  """What a user sees: `ssl_jax: error: ...`, exit 1, no traceback wall
  (unless --debug); all fail before any data is read."""
  wd = str(tmp_path / "w")
  cases = [
      (["--config", MAE, "--config.nonexistent=1"], "unknown config key --config.nonexistent"),
      (["--config", "configs/nope.py"], "config file 'configs/nope.py' not found"),
      (["--config", MAE, "--config.keep_checkpoints=0"], "keep_checkpoints=0 must be"),
  ]
  for args, message in cases:
    r = run_main(args + ["--workdir", wd])
    assert r.returncode == 1, r.stderr[-2000:]
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("ssl_jax: error:")]
    assert len(lines) == 1 and message in lines[0], r.stderr[-2000:]
    assert "Traceback" not in r.stderr and "[ssl_jax] step" not in r.stdout
  assert not os.path.exists(os.path.join(wd, "checkpoints"))
  r = run_main(["--config", MAE, "--config.nonexistent=1", "--workdir", wd, "--debug"])
  assert r.returncode == 1 and "Traceback" in r.stderr


def test_zero_epochs_exports_the_initialisation(tmp_path):
  """num_epochs=0 is the results suite's random-init twin: no step, an export.

  Break tried: rejecting num_epochs=0 in config_check (as the first hardening
  pass did) stops the suite's random-init rows before they export.
  """
  from ssl_jax import export, metrics, train  # pylint: disable=g-import-not-at-top
  c = tiny_mae_config(total_steps=None, num_epochs=0.0)
  config_check.check(c, ("pretrain", "eval"), device_count=1)
  import jax  # pylint: disable=g-import-not-at-top
  train.train(c, str(tmp_path), devices=jax.devices()[:1])
  logged = tmp_path / "metrics.jsonl"
  assert not logged.exists() or not [r for r in metrics.read(str(tmp_path))
                                     if r["kind"] == "train"]
  enc = export.load(str(tmp_path / "export"))
  assert enc.model_cfg["width"] == 32 and enc.info["step"] == 0
