"""Floor 1: data sources and validation, models, training, evaluation and the gate: callable (and tested) without KFP."""
