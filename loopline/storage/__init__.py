"""Floor 1: the platform database, its tables and migrations, every store over them, and the model registry."""
