"""nni_robust.trial."""
