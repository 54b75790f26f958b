"""Floor 1: loopline's building blocks and the KFP components that call them."""
