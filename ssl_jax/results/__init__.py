"""The results suite: `python -m ssl_jax.results --suite fmnist`.

`suite.py` reads a suite file (configs/results/<suite>.py) into rows and
cells and knows when a cell's stage is done; `run.py` runs the missing
stages as ordinary `ssl_jax.main` commands; `aggregate.py` turns the cells'
metrics.jsonl files into results/<suite>.{json,md,png}.
"""
