"""Training and evaluation: the fit loop, metrics and the experiment runner."""
