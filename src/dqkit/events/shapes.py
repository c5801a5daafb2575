"""The shape of a session, shared by the generator's ordinary users and its newcomers."""

from __future__ import annotations

import numpy as np


def session_events(rng: np.random.Generator, n_sessions: int, event_types, mean_len: float = 8.0
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The events of ``n_sessions`` sessions: each event's session, its offset from the session's
    start (ms) and its type; sessions last a geometric number of events, seconds apart, and
    open with ``session_start``."""
    length = rng.geometric(1 / mean_len, n_sessions)
    sess = np.repeat(np.arange(n_sessions), length)
    step = rng.exponential(25_000, len(sess)).astype(np.int64)
    first = np.r_[True, sess[1:] != sess[:-1]]
    step[first] = 0
    offs = np.cumsum(step) - np.repeat(np.cumsum(step)[np.flatnonzero(first)], length)
    et, ew = zip(*event_types)
    etype = rng.choice(np.array(et, dtype=object), len(sess), p=ew)
    etype[first] = "session_start"
    return sess, offs, etype
