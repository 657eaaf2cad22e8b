"""Run the simulator with its default config and compare its figures with the handbook's.

The handbook's figures come from its data set made with the same defaults, so a
faithful simulator lands near them, within the spread that another seed gives.
S4 and S5 are not in the handbook: they are counted apart, and the totals that
are compared leave them out.

Usage: .venv/bin/python scripts/check_simulator.py [--seed N] [--messages]
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np

from labkit.fraud_scenarios import S3, S4, S5, card_present_legs, impossible_travel
from labkit.simulator import HANDBOOK_FIGURES, SimulatorConfig, simulate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=SimulatorConfig.seed, help="simulation seed")
    parser.add_argument(
        "--messages", action="store_true",
        help="also build every Kafka message, to time the producer's side",
    )
    args = parser.parse_args()
    config = SimulatorConfig(seed=args.seed)

    started = time.perf_counter()
    simulation = simulate(config)
    seconds = time.perf_counter() - started
    columns = simulation.columns
    counts = simulation.scenario_counts()
    handbook_rows = columns.scenario < S4
    figures = {
        "transactions": int(handbook_rows.sum()),
        "frauds": int(((columns.scenario > 0) & (columns.scenario <= S3)).sum()),
        **{name: counts[name] for name in list(HANDBOOK_FIGURES)[2:]},
    }

    print(f"simulated {len(columns):,} transactions in {seconds:.1f} s (seed {config.seed})")
    print(f"{'figure':<26} {'simulated':>11} {'handbook':>11} {'error':>8}")
    for name, published in HANDBOOK_FIGURES.items():
        error = (figures[name] - published) / published
        print(f"{name:<26} {figures[name]:>11,} {published:>11,} {error:>+8.2%}")
    rate = figures["frauds"] / figures["transactions"]
    published_rate = HANDBOOK_FIGURES["frauds"] / HANDBOOK_FIGURES["transactions"]
    print(f"{'fraud rate':<26} {rate:>11.3%} {published_rate:>11.3%}")

    print(f"{'s4_card_testing (extra)':<26} {counts['s4_card_testing']:>11,}")
    print(f"{'s5_impossible_travel (extra)':<26} {counts['s5_impossible_travel']:>11,}")
    terminal_xy = simulation.terminals[["x", "y"]].to_numpy()
    km, gap = card_present_legs(columns, terminal_xy, config.km_per_unit)
    with np.errstate(divide="ignore", invalid="ignore"):
        too_fast = km * 3600 > config.max_speed_kmh * gap
    impossible = impossible_travel(columns, terminal_xy, config)
    is_s5 = columns.scenario == S5
    print(f"legs above {config.max_speed_kmh:.0f} km/h: {int((too_fast & is_s5).sum()):,} "
          f"to S5, {int((too_fast & ~is_s5).sum()):,} to other transactions")
    print(f"  and also {config.impossible_leg_km:.0f} km or longer: "
          f"{int((impossible & is_s5).sum()):,} to S5, {int((impossible & ~is_s5).sum()):,} "
          "to other transactions")
    reach = simulation.customers["terminal_count"].mean()
    print(f"terminals per customer: {reach:.1f} on average")

    if args.messages:
        started = time.perf_counter()
        size = sum(len(json.dumps(t.to_message())) for t in simulation.iter_transactions())
        print(f"built every message ({size / 1e6:.0f} MB of JSON) in "
              f"{time.perf_counter() - started:.1f} s")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory (max RSS): {peak:.0f} MiB; numpy {np.__version__}")


if __name__ == "__main__":
    main()
