"""Shared, method-agnostic pieces: masking, patchify, targets, EMA, RoPE."""
