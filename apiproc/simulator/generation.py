"""What the simulated model "writes" for an accepted request, and how long it takes.

    generation = generate(config, answer_key(body, raw), max_tokens, chance)
    generation.output_tokens, generation.clipped, generation.text

The answer is seeded from the request body, so the same request always gets the same answer
(streamed or not, when the body says which); only the latency jitter comes from the
simulator's shared generator.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from typing import Any

from apiproc.simulator.config import SimulatorConfig

FILLER_WORDS = ("the", "sim", "ran", "a", "new", "day", "so", "it", "is", "ok", "and", "we")


@dataclass(slots=True)
class Generation:
    """What the model "writes" for one accepted request."""

    output_tokens: int
    clipped: bool  # stopped at the request's max_tokens
    text: str
    first_token_delay: float
    generation_time: float


def generate(
    config: SimulatorConfig, key: bytes, max_tokens: int | None, chance: random.Random
) -> Generation:
    """Draw the answer's length and text from the request's `key` (`answer_key`), its
    latency from ``chance``; `max_tokens` None sets no ceiling."""
    # Seeded from the body so that the same request always gets the same answer.
    seed = hashlib.sha256(f"{config.seed}|".encode() + key).digest()
    rng = random.Random(seed)
    low, high = config.output_tokens
    drawn = max(1, rng.randint(low, high))  # output_tokens is never zero (§A.3)
    clipped = max_tokens is not None and drawn > max_tokens
    tokens = max_tokens if clipped and max_tokens is not None else drawn
    speed = config.output_tokens_per_second
    return Generation(
        output_tokens=tokens,
        clipped=clipped,
        text=_filler_text(tokens, rng),
        first_token_delay=config.latency + chance.uniform(0.0, config.latency_jitter),
        generation_time=tokens / speed if speed > 0 else 0.0,
    )


def answer_key(body: dict[str, Any], raw: bytes) -> bytes:
    """The body as sent (`raw`); with a ``stream`` member, the body without it in canonical
    form, so that ``"stream": true`` and ``"stream": false`` get the same answer."""
    if "stream" not in body:
        return raw
    rest = {key: value for key, value in body.items() if key != "stream"}
    return json.dumps(rest, sort_keys=True, separators=(",", ":")).encode()


def _filler_text(tokens: int, rng: random.Random) -> str:
    # Every filler word is at most 3 characters, so each is exactly one token.
    return " ".join(rng.choice(FILLER_WORDS) for _ in range(tokens))
