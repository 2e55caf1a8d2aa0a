"""Distillation core: taps (forward hooks), loss terms, the per-input layer router, the Distiller, the cache."""
