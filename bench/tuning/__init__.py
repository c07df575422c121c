"""Fair tuning: every method gets the same trial budget on a validation split carved from the
training data, scored by one declared objective (README: Tuning).

Modules: ``tuned_file`` (the ``tuned.yaml`` schema and how a grid applies it), ``objective``
(the declared objectives), ``space`` (search spaces to Optuna), ``tuner`` (``--tune N``).
"""
