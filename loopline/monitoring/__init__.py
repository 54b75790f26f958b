"""Floor 4: drift and quality checks over the prediction log, policies, alerts, triggers and retraining."""
