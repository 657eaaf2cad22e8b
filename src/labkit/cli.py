"""The `labkit` command: run the lab, produce transactions, stream them, report counts."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from labkit import config
from labkit.processes import LabError

log = logging.getLogger("labkit")


def _lab(args: argparse.Namespace) -> int:
    from labkit import lab

    settings = config.load()
    if args.action == "up":
        lab.up(settings, with_airflow="airflow" in args.with_services)
    elif args.action == "down":
        lab.down(settings)
    elif args.action == "reset":
        lab.reset(settings)
    elif args.action == "status":
        state = lab.status(settings)
        if args.json:
            print(json.dumps(state))
        else:
            for service in state["services"]:
                health = "healthy" if service["healthy"] else "down"
                print(f"{service['name']:<10} {service['address']:<22} {health}")
        return 0 if state["healthy"] else 1
    return 0


def _jars(args: argparse.Namespace) -> int:
    from labkit import jars

    jars.resolve(config.load())
    return 0


def _produce(args: argparse.Namespace) -> int:
    from labkit import producer

    settings = config.load()
    if args.raw_file is not None:
        result = producer.produce_raw_file(settings, args.raw_file)
    else:
        result = producer.produce_generated(
            settings, count=args.count, rate=args.rate, seed=args.seed
        )
    return _print_produce_result(result)


def _simulate(args: argparse.Namespace) -> int:
    from labkit import simulator

    simulation_config = simulator.SimulatorConfig(
        customers=args.customers, terminals=args.terminals, days=args.days, seed=args.seed
    )
    result = simulator.produce(config.load(), simulation_config, rate=args.rate)
    return _print_produce_result(result)


def _print_produce_result(result) -> int:
    print(json.dumps(result.summary()))
    if result.failed:
        log.error("%d messages were not delivered; their ids follow", len(result.failed))
        for message_id in result.failed:
            print(message_id, file=sys.stderr)
        return 1
    return 0


def _stream(args: argparse.Namespace) -> int:
    from labkit import streaming

    streaming.run(config.load(), available_now=args.available_now)
    return 0


def _report(args: argparse.Namespace) -> int:
    from labkit import report

    counts = report.collect(config.load())
    if args.json:
        print(json.dumps(counts))
    else:
        for name, value in counts.items():
            print(f"{name:<28} {value}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="labkit", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    commands = parser.add_subparsers(dest="command", required=True)

    lab = commands.add_parser("lab", help="start, stop, inspect or reset the lab's services")
    lab.add_argument("action", choices=["up", "down", "status", "reset"])
    lab.add_argument("--json", action="store_true", help="status: print one JSON object")
    lab.add_argument(
        "--with",
        dest="with_services",
        action="append",
        choices=["airflow"],
        default=[],
        help="up: also start this optional service (airflow: UI on 127.0.0.1:8080)",
    )
    lab.set_defaults(handler=_lab)

    jars = commands.add_parser("jars", help="resolve the Kafka and Spark jars with Maven")
    jars.set_defaults(handler=_jars)

    produce = commands.add_parser("produce", help="send transactions to the Kafka topic")
    source = produce.add_mutually_exclusive_group(required=True)
    source.add_argument("--count", type=int, help="number of generated transactions to send")
    source.add_argument(
        "--raw-file", type=Path, help="send each line of this file, byte for byte, as a message"
    )
    produce.add_argument(
        "--rate", type=float, default=None, help="messages per second (default: as fast as possible)"
    )
    produce.add_argument("--seed", type=int, default=1, help="seed of the transaction stream")
    produce.set_defaults(handler=_produce)

    simulate = commands.add_parser(
        "simulate",
        help="simulate the fraud handbook's card transactions and send them to the topic",
    )
    simulate.add_argument("--days", type=int, default=183, help="days simulated from 2018-04-01")
    simulate.add_argument("--customers", type=int, default=5000, help="number of customers")
    simulate.add_argument("--terminals", type=int, default=10000, help="number of terminals")
    simulate.add_argument("--seed", type=int, default=0, help="seed of the simulation")
    simulate.add_argument(
        "--rate", type=float, default=None, help="messages per second (default: as fast as possible)"
    )
    simulate.set_defaults(handler=_simulate)

    stream = commands.add_parser("stream", help="run the Spark fraud query from Kafka to Postgres")
    stream.add_argument(
        "--available-now",
        action="store_true",
        help="process the messages in the topic now, then stop (default: run until interrupted)",
    )
    stream.set_defaults(handler=_stream)

    report = commands.add_parser("report", help="print the lab's counts from Kafka and Postgres")
    report.add_argument("--json", action="store_true", help="print one JSON object")
    report.set_defaults(handler=_report)

    dashboard = commands.add_parser(
        "dashboard",
        help="create or update the Metabase dashboard on the dbt marts (Metabase at "
        "LAB_METABASE_URL)",
    )
    dashboard.set_defaults(handler=_dashboard)
    return parser


def _dashboard(args: argparse.Namespace) -> int:
    from labkit import metabase

    result = metabase.provision(config.load())
    print(json.dumps(result.summary()))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # kafka-python logs each refused connection of a retry loop as an error;
    # labkit reports the outcome itself.
    if not args.verbose:
        logging.getLogger("kafka").setLevel(logging.CRITICAL)
        logging.getLogger("py4j").setLevel(logging.WARNING)
    try:
        return args.handler(args)
    except LabError as error:
        log.error("%s", error)
        return 2
    except KeyboardInterrupt:
        log.info("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
