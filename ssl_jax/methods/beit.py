"""BEiT (Bao et al. 2022): block-wise masking (Alg. 1, ratio 0.4), mask tokens
inside the encoder, a linear head classifying the visual token of each masked
patch (cross-entropy, Eq. 1). The visual tokens come from an offline k-means
tokenizer (ssl_jax/tokenizers) instead of DALL-E's dVAE: a named deviation.
Layout and losses: methods/mim.py."""
from ssl_jax.methods import METHODS, mim

METHODS.register("beit", mim.method("beit", "token"))
