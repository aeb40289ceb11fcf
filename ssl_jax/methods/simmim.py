"""SimMIM (Xie et al. 2022): mask tokens inside the encoder over the full
sequence, random masking of 32 px mask units (Sec. 3.1), a linear head and an
l1 loss on the raw pixels of masked patches (Sec. 3.3, Eq. 1).
The shared layout and losses live in methods/mim.py."""
from ssl_jax.methods import METHODS, mim

METHODS.register("simmim", mim.method("simmim", "pixel"))
