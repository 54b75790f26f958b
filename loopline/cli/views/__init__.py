"""What the terminal shows: a running pipeline, its summary, a monitoring pass, the status."""
