"""Every kind of bad message the stream must survive, with the outcome each one must get.

data/samples/bad_messages.jsonl is written from CASES, one message per line:

    .venv/bin/python -m tests.bad_message_cases

The file is byte-exact: it contains invalid UTF-8, a NUL byte, an empty line and a
carriage return, which is why a script writes it rather than an editor.
test_bad_messages.py checks that the committed file still equals CASES.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from labkit.validation import REQUIRED_TEXT_FIELDS

SAMPLE_FILE = Path(__file__).resolve().parents[1] / "data" / "samples" / "bad_messages.jsonl"

# Outcomes besides a quarantine reason.
LOADED = "loaded"
DUPLICATE = "duplicate"

# Ids that no generated dimension row has: the stream creates inferred rows for them.
UNKNOWN_CUSTOMER = "cus_sample_unknown"
UNKNOWN_CARD = "card_sample_unknown"
UNKNOWN_MERCHANT = "mer_sample_unknown"
# The transaction sent twice; the first copy, amount 25.00, is the one loaded.
SENT_TWICE_ID = "sample-sent-twice"


@dataclass(frozen=True)
class Case:
    """One line of the sample file: a name, the message bytes and the expected outcome."""

    name: str
    value: bytes
    expected: str


def body(name: str, **changes: object) -> dict[str, object]:
    """Return a valid message body with transaction id sample-NAME and the changes applied.

    A change to ... removes the field.
    """
    fields: dict[str, object] = {
        "transaction_id": f"sample-{name}",
        "event_time": "2018-04-03T12:00:00.000+00:00",
        "customer_id": "cus_00001",
        "card_id": "card_000001",
        "merchant_id": "mer_00001",
        "amount": "25.00",
        "currency": "EUR",
        "channel": "card_present",
        "mcc": "5411",
    }
    for field, value in changes.items():
        if value is ...:
            fields.pop(field)
        else:
            fields[field] = value
    return fields


def message(name: str, **changes: object) -> bytes:
    """Return body(name, **changes) as JSON bytes."""
    return json.dumps(body(name, **changes)).encode()


def case(name: str, expected: str, **changes: object) -> Case:
    """Return a case whose message is a valid one with the changes applied."""
    return Case(name, message(name, **changes), expected)


def _structure_cases() -> list[Case]:
    valid = message("valid")
    return [
        Case("valid", valid, LOADED),
        Case("not_json", b"card 4111 paid 25.00 EUR at noon", "malformed_json"),
        Case("truncated_json", message("truncated_json")[:70], "malformed_json"),
        Case("json_array", b"[" + message("json_array") + b"]", "not_json_object"),
        Case("json_number", b"42", "not_json_object"),
        Case("json_string", b'"a card payment"', "not_json_object"),
        Case("json_null", b"null", "not_json_object"),
        Case("empty_value", b"", "empty_value"),
        Case("whitespace_only", b"   \t ", "malformed_json"),
        Case(
            "invalid_utf8",
            message("invalid_utf8", merchant_id="mer_PLACEHOLDER").replace(
                b"PLACEHOLDER", b"\xff\xfe"
            ),
            "invalid_utf8",
        ),
        Case("utf8_byte_order_mark", b"\xef\xbb\xbf" + message("utf8_byte_order_mark"),
             "malformed_json"),
        Case(
            "nul_byte",
            message("nul_byte", merchant_id="mer_PLACEHOLDER").replace(b"PLACEHOLDER", b"\x00"),
            "nul_character",
        ),
        case("nul_escaped", "nul_character", merchant_id="mer_\u0000_00001"),
        Case(
            "duplicate_key",
            message("duplicate_key").replace(b'"amount": "25.00"',
                                             b'"amount": "25.00", "amount": "2500.00"'),
            "malformed_json",
        ),
        Case("carriage_return_line_end", message("carriage_return_line_end") + b"\r", LOADED),
    ]


def _field_cases() -> list[Case]:
    cases = []
    for field in (*REQUIRED_TEXT_FIELDS, "event_time"):
        cases.append(case(f"missing_{field}", f"missing_{field}", **{field: ...}))
        cases.append(case(f"null_{field}", f"missing_{field}", **{field: None}))

    wrong_types: dict[str, object] = {
        "transaction_id": 1001,
        "customer_id": 1,
        "card_id": {"id": "card_000001"},
        "merchant_id": 1,
        "amount": 25.0,
        "currency": ["EUR"],
        "channel": True,
    }
    for field, value in wrong_types.items():
        cases.append(case(f"{field}_of_wrong_type", f"invalid_type_{field}", **{field: value}))
    cases.append(case("event_time_boolean", "invalid_type_event_time", event_time=True))

    cases += [
        case("transaction_id_blank", "invalid_transaction_id", transaction_id="   "),
        case("customer_id_empty", "invalid_customer_id", customer_id=""),
        case("card_id_too_long", "invalid_card_id", card_id="card_" + "9" * 60),
        case("merchant_id_blank", "invalid_merchant_id", merchant_id=" "),
    ]
    return cases


def _value_cases() -> list[Case]:
    return [
        case("amount_decimal_comma", "invalid_amount", amount="25,00"),
        case("amount_exponent", "invalid_amount", amount="2.5e1"),
        case("amount_with_currency", "invalid_amount", amount="25.00 EUR"),
        case("amount_zero", "amount_not_positive", amount="0.00"),
        case("amount_negative", "amount_not_positive", amount="-25.00"),
        case("amount_three_decimals", "amount_too_many_decimals", amount="25.005"),
        case("amount_beyond_numeric_12_2", "amount_out_of_range", amount="12345678901.00"),
        case("amount_at_numeric_12_2_limit", LOADED, amount="9999999999.99"),
        case("currency_not_iso_4217", "unknown_currency", currency="EURO"),
        case("currency_lower_case", "unknown_currency", currency="eur"),
        case("currency_unassigned_code", "unknown_currency", currency="XYZ"),
        case("channel_unknown", "invalid_channel", channel="atm"),
        case("mcc_too_short", "invalid_mcc", mcc="54"),
        case("mcc_missing", LOADED, mcc=...),
        case("event_time_not_a_time", "invalid_event_time", event_time="yesterday at noon"),
        case("event_time_millis_as_text", "invalid_event_time", event_time="1522756800000"),
        case("event_time_before_2000", "event_time_too_old",
             event_time="1999-12-31T23:59:59+00:00"),
        # Year 2999 stays more than a day in the future for as long as this file is used.
        case("event_time_far_future", "event_time_in_future",
             event_time="2999-01-01T00:00:00+00:00"),
        case("event_time_epoch_millis", LOADED, event_time=1522756800000),
        case("unknown_extra_fields", LOADED, loyalty_tier="gold",
             device={"os": "android", "app_version": "5.2"}),
        case("unknown_dimensions", LOADED, customer_id=UNKNOWN_CUSTOMER,
             card_id=UNKNOWN_CARD, merchant_id=UNKNOWN_MERCHANT),
    ]


def _duplicate_cases() -> list[Case]:
    first = message("sent_twice", transaction_id=SENT_TWICE_ID)
    return [
        Case("sent_twice_first", first, LOADED),
        Case("sent_twice_again", first, DUPLICATE),
        case("sent_twice_changed", DUPLICATE, transaction_id=SENT_TWICE_ID, amount="99.00"),
    ]


CASES: list[Case] = _structure_cases() + _field_cases() + _value_cases() + _duplicate_cases()


def file_bytes() -> bytes:
    """Return the sample file's content: each case's value followed by a newline byte."""
    for sample in CASES:
        if b"\n" in sample.value:
            raise ValueError(f"case {sample.name} contains a newline byte, which splits the line")
    return b"".join(sample.value + b"\n" for sample in CASES)


def main() -> int:
    """Write the sample file from CASES."""
    SAMPLE_FILE.parent.mkdir(parents=True, exist_ok=True)
    SAMPLE_FILE.write_bytes(file_bytes())
    print(f"wrote {len(CASES)} messages to {SAMPLE_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
