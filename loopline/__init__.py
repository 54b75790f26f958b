"""loopline: a Kubeflow-style MLOps platform. One namespace, floors pointing down:

0 ``core`` (settings, errors, processes, images) -> 1 ``storage`` (database, stores,
registry) -> 1 ``ml`` (data, models, training, evaluation, gate) -> 2 ``serving`` ->
2 ``components`` (KFP components only) -> 3 ``pipelines`` (definitions, the local runner,
cluster targets) -> 4 ``monitoring`` -> 5 ``catalog`` and ``cli``. The import-linter
contract in ``pyproject.toml`` keeps every import pointing down.
"""
