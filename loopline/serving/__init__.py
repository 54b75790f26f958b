"""Floor 2: the BentoML model server: request parsing, batching, the champion it follows, its metrics."""
