"""Stream the full default simulation through the lab and print the rules' detection quality.

This is how the README's results were made. It empties the lab first (topic,
tables, dbt schemas, checkpoints). Then it simulates the handbook's default data
set (about 1.8 million transactions) and sends it to Kafka. It streams the data
with the fraud rules, builds the marts with dbt, and prints the detection
quality of the whole run and of the handbook's test week as JSON.

It takes a while: count about half an hour on a 2-core laptop, most of it
in the streaming query.

Usage: .venv/bin/python scripts/measure_detection.py --reset-lab [--seed N]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from typing import Any

from labkit import config, dbt_runner, lab, report, simulator, streaming, warehouse

# Micro-batches of about 25 days of the default data keep the Spark driver small.
OFFSETS_PER_BATCH = 250_000


def rows(settings: config.Settings, sql: str) -> list[dict[str, Any]]:
    frame = warehouse.query(settings, sql)
    return json.loads(frame.to_json(orient="records", date_format="iso"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reset-lab", action="store_true",
                        help="confirm that the lab's topic, tables and checkpoints may be emptied")
    parser.add_argument("--seed", type=int, default=simulator.SimulatorConfig.seed)
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if not args.reset_lab:
        sys.exit("this script empties the lab before it starts: run it with --reset-lab")

    settings = dataclasses.replace(config.load(), max_offsets_per_trigger=OFFSETS_PER_BATCH)
    timings = {}
    started = time.perf_counter()
    lab.up(settings)
    lab.reset(settings)
    produced = simulator.produce(settings, simulator.SimulatorConfig(seed=args.seed))
    timings["simulate_and_produce_seconds"] = round(time.perf_counter() - started, 1)

    started = time.perf_counter()
    streaming.run(settings, available_now=True)
    timings["stream_seconds"] = round(time.perf_counter() - started, 1)

    started = time.perf_counter()
    built = dbt_runner.run(settings, "build")
    if built.exit_code != 0:
        sys.exit(f"dbt build failed:\n{built.output[-3000:]}")
    timings["dbt_build_seconds"] = round(time.perf_counter() - started, 1)

    counts = report.stream_counts(settings)
    print(json.dumps({
        "seed": args.seed,
        "produced": produced.delivered,
        "fraud_labels": produced.fraud_labels,
        **{name: counts[name] for name in ("loaded", "unaccounted", "flagged", "late")},
        **timings,
        "quality": rows(
            settings,
            "select * from marts.detection_quality where period_type <> 'day' "
            "order by period_type",
        ),
        "by_rule": rows(
            settings, "select * from marts.detection_by_rule order by period_type, rule_name"
        ),
        "by_scenario": rows(
            settings, "select * from marts.detection_by_scenario order by period_type, scenario"
        ),
    }, indent=2))


if __name__ == "__main__":
    main()
