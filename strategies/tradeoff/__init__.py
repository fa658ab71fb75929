"""Trade-off tuning with Optuna under NNI: an Optuna study as an NNI tuner, and the Pareto front.

* :mod:`.optuna_tuner` -- ``OptunaTuner`` (ask-and-tell, NNI search-space mapping,
  multi-objective NSGA-II/TPE, SQLite storage resumed across restarts);
* :mod:`.pareto` -- the Pareto front, its table and plot.

The trial it runs (a whole search in-process) is :mod:`nni_robust.trial.tradeoff`.
Importing this package only registers names.
"""

from ..registry import Method, register_method

register_method(Method(
    name="tradeoff",
    paper="Optuna (Akiba et al., KDD 2019) NSGA-II / TPE over the methods' trade-off weights",
))
