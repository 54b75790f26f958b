"""The diabetes project's data: scikit-learn's embedded diabetes data (442 patients, 10
standardised measurements, disease progression after one year).

Patients are drawn from the real ones' measurements (with noise) and their progression
from a model of the real data plus noise: fresh patients, not copies of the 442, so a
held-out row tests what a model learnt rather than what it remembers.

``normal`` draws patients as they were; ``shifted`` is a new clinic whose patients are
heavier (``bmi`` and ``s5`` move up) and, past the first clinic's weights, progress
faster with weight. The rows are
resampled with a little noise, so any number of them can be drawn.
loopline's example loop (``loopline demo --example diabetes_torch``) reads the names below.
"""

import numpy as np
import pandas as pd
from sklearn.datasets import load_diabetes

MODEL_NAME = "diabetes"
LABEL = "progression"
WORSE = {"epochs": 1}  # pipeline parameters that make a deliberately worse model
DRIFTED = ["bmi", "s5"]
BAD_REQUEST = {
    "instance": {**{c: 0.0 for c in load_diabetes().feature_names}, "bmi": "heavy"},
    "column": "bmi",
}


def patients(rows: int, seed: int, shifted: bool = False) -> pd.DataFrame:
    data = load_diabetes(as_frame=True)
    rng = np.random.default_rng(seed)
    features = data.feature_names
    real = data.frame[features].to_numpy()
    coef, *_ = np.linalg.lstsq(np.c_[real, np.ones(len(real))], data.target, rcond=None)
    picked = data.frame[features].sample(n=rows, replace=True, random_state=seed)
    picked = picked.reset_index(drop=True) + rng.normal(0, 0.01, (rows, len(features)))
    if shifted:
        picked["bmi"] += 0.1
        picked["s5"] += 0.03
    bmi = picked["bmi"].to_numpy()
    target = np.c_[picked.to_numpy(), np.ones(rows)] @ coef + 2000 * bmi**2
    if shifted:  # progression climbs with weight past where the first clinic's patients were
        target = target + 1500 * np.clip(bmi - 0.1, 0, None)
    target = target + rng.normal(0, 25, rows)
    frame = picked[features].astype("float32")
    frame[LABEL] = target.astype("float64")
    return frame


def normal(rows: int, seed: int) -> pd.DataFrame:
    return patients(rows, seed)


def shifted(rows: int, seed: int) -> pd.DataFrame:
    return patients(rows, seed, shifted=True)
