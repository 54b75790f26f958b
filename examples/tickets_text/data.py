"""The support-ticket project's data: short texts written from topic vocabularies.

``normal`` tickets are about billing, the app and delivery. ``shifted`` tickets come after
a router launch: technical tickets name new hardware words the first model never saw,
and they are longer. loopline's example loop (``loopline demo --example tickets_text``)
reads the names below.
"""

import numpy as np
import pandas as pd

MODEL_NAME = "tickets"
LABEL = "topic"
WORSE = {"max_features": 5}  # pipeline parameters that make a deliberately worse model
DRIFTED = ["text.oov_share"]
BAD_REQUEST = {"instance": {"text": 42, "channel": "email"}, "column": "text"}

WORDS = {
    "billing": "invoice charge refund payment card bill overcharged price subscription paid",
    "app": "app crash login password screen update error button slow freeze",
    "delivery": "parcel delivery courier late address package tracking arrived lost box",
}
NEW = {  # after the launch: technical tickets about the router, in new words
    "app": "router wifi firmware antenna reboot modem signal ethernet mesh bandwidth",
}
FILLER = [
    "please",
    "help",
    "hello",
    "thanks",
    "my",
    "the",
    "is",
    "not",
    "and",
    "it",
    "today",
    "again",
    "why",
    "urgent",
]


def tickets(rows: int, seed: int, shifted: bool = False) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    topics = rng.choice(list(WORDS), rows, p=[0.35, 0.4, 0.25] if shifted else None)
    texts = []
    for topic in topics:
        vocabulary = (NEW if shifted and topic in NEW else WORDS)[topic].split()
        # Topic words are few among fillers, and every topic's words appear elsewhere too:
        # the task is learnable, not trivial.
        length = rng.integers(10, 18) if shifted else rng.integers(6, 12)
        words = [
            rng.choice(vocabulary)
            if rng.random() < 0.3
            else rng.choice(WORDS[rng.choice(list(WORDS))].split())
            if rng.random() < 0.25
            else rng.choice(FILLER)
            for _ in range(length)
        ]
        texts.append(" ".join(words))
    channel = rng.choice(["email", "chat", "phone"], rows)
    return pd.DataFrame({"text": texts, "channel": channel, LABEL: topics})


def normal(rows: int, seed: int) -> pd.DataFrame:
    return tickets(rows, seed)


def shifted(rows: int, seed: int) -> pd.DataFrame:
    return tickets(rows, seed, shifted=True)
