"""nni_robust.strategies."""
