"""The churn project's data: synthetic customers, as a data scientist's own module.

``normal`` is the world the first model learns; ``shifted`` is the world after a launch
in a new region, ``central``, whose customers call support more, and leave far more
often when they do.
loopline's example loop (``loopline demo --example churn_sklearn``) reads the names below.
"""

import numpy as np
import pandas as pd

MODEL_NAME = "churn"
LABEL = "churned"
WORSE = {"max_iter": 1}  # pipeline parameters that make a deliberately worse model
DRIFTED = ["region", "support_calls"]  # columns the shifted traffic moves
BAD_REQUEST = {  # a request with a wrong type: the 4xx must name the column
    "instance": {
        "tenure_months": 12.0,
        "monthly_charges": 50.0,
        "support_calls": 1,
        "plan": 3,
        "region": "north",
    },
    "column": "plan",
}


def customers(rows: int, seed: int, shifted: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    regions = ["north", "south", "east", "west", "central"]
    weights = [0.1, 0.1, 0.1, 0.1, 0.6] if shifted else [0.25, 0.25, 0.25, 0.25, 0.0]
    region = rng.choice(regions, rows, p=weights)
    plan = rng.choice(["basic", "standard", "premium"], rows, p=[0.5, 0.3, 0.2])
    tenure = rng.gamma(2.0, 12.0, rows).round(1)
    charges = 20 + 30 * (plan == "standard") + 60 * (plan == "premium") + rng.normal(0, 8, rows)
    calls = rng.poisson(np.where(region == "central", 3.0, 1.5))
    risk = -1.5 + 0.9 * calls - 0.08 * tenure + 0.02 * charges + 1.0 * (region == "south")
    risk = np.where(region == "central", -3.0 + 2.5 * calls, risk)
    churned = np.where(rng.random(rows) < 1 / (1 + np.exp(-risk)), "yes", "no")
    return pd.DataFrame(
        {
            "tenure_months": tenure,
            "monthly_charges": charges.round(2),
            "support_calls": calls.astype("int64"),
            "plan": plan,
            "region": region,
            LABEL: churned,
        }
    )


def normal(rows: int, seed: int) -> pd.DataFrame:
    return customers(rows, seed)


def shifted(rows: int, seed: int) -> pd.DataFrame:
    return customers(rows, seed, shifted=True)
