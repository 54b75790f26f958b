"""Floor 3: the pipeline definitions (training, retraining); the local runner (``local``) and the cluster targets (``cluster``) beside them."""
