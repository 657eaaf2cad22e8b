"""Generated transactions as the lab sends them, serialized once before any timing starts."""

from __future__ import annotations

import json

from labkit import generator

# Seed of the benchmark's transactions; any seed gives the same kind of data.
SEED = 11


def generated(count: int) -> tuple[generator.World, list[generator.Transaction]]:
    """Return the default world and count transactions of it."""
    config = generator.GeneratorConfig()
    world = generator.build_world(config)
    return world, list(generator.generate_transactions(world, config, count, SEED))


def serialized(transactions: list[generator.Transaction]) -> list[tuple[str, bytes, bytes]]:
    """Return (id, key, value) triples exactly as labkit.producer sends transactions."""
    return [
        (t.transaction_id, t.card_id.encode(), json.dumps(t.to_message()).encode())
        for t in transactions
    ]
