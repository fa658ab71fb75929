"""nni_robust.spaces."""
