"""Parse and validate raw Kafka messages in Spark, giving each rejected one a reason.

Messages are parsed into Spark's VARIANT type rather than a fixed struct, so the
JSON type of each field stays visible. An id sent as a number or an amount sent
as a float is then rejected instead of being silently converted.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from labkit.currencies import ISO_4217_CODES

# Fields every transaction message must carry as JSON strings (event_time may
# also be epoch milliseconds). Other fields are accepted and ignored.
REQUIRED_TEXT_FIELDS = (
    "transaction_id", "customer_id", "card_id", "merchant_id", "amount", "currency", "channel",
)
CHANNELS = ("card_present", "ecommerce")
MAX_ID_LENGTH = 64
# numeric(12, 2) stores at most ten digits before the decimal point.
MAX_INTEGER_DIGITS = 10
# Older event times are taken for a broken clock, not a late transaction.
OLDEST_EVENT_TIME = "2000-01-01 00:00:00"
# An event time may be at most this far ahead of the moment the stream reads it.
MAX_CLOCK_SKEW = "INTERVAL 1 DAY"


def _field(payload: Column, name: str) -> Column:
    return F.try_variant_get(payload, f"$.{name}", "variant")


def _json_type(payload: Column, name: str) -> Column:
    # schema_of_variant names the JSON type: STRING, BIGINT, DECIMAL(3,1), VOID (null), ...
    return F.schema_of_variant(_field(payload, name))


def _text(payload: Column, name: str) -> Column:
    return F.try_variant_get(payload, f"$.{name}", "string")


def parse(raw: DataFrame) -> DataFrame:
    """Add payload (the value as VARIANT, null when it is not JSON) and the fields as text."""
    text = F.when(F.is_valid_utf8(F.col("value").cast("string")), F.col("value").cast("string"))
    parsed = raw.withColumn("value_text", text).withColumn(
        "payload", F.try_parse_json(F.col("value_text"))
    )
    # Each field's text and JSON type are columns of their own, computed once:
    # the checks in _reason read them several times each.
    for name in REQUIRED_TEXT_FIELDS + ("mcc",):
        parsed = parsed.withColumn(f"{name}_text", _text(F.col("payload"), name))
    for name in REQUIRED_TEXT_FIELDS + ("event_time",):
        parsed = parsed.withColumn(f"{name}_type", _json_type(F.col("payload"), name))
    return parsed.withColumn("payload_type", F.schema_of_variant(F.col("payload")))


def _event_time(payload: Column, json_type: Column) -> Column:
    # An integer event time is epoch milliseconds; text must be an ISO-8601 timestamp.
    from_millis = F.timestamp_millis(F.try_variant_get(payload, "$.event_time", "bigint"))
    from_text = F.try_to_timestamp(F.try_variant_get(payload, "$.event_time", "string"))
    return F.when(json_type == "BIGINT", from_millis).when(json_type == "STRING", from_text)


def _reason(parsed: DataFrame) -> Column:
    payload = F.col("payload")
    amount = F.col("amount_text")
    plain_number = amount.rlike(r"^-?[0-9]+(\.[0-9]+)?$")
    decimals = F.length(F.regexp_extract(amount, r"\.([0-9]+)$", 1))
    integer_digits = F.length(F.regexp_extract(amount, r"^-?0*([0-9]*)", 1))
    amount_value = amount.try_cast("decimal(38,2)")

    checks: list[tuple[Column, Column]] = [
        (F.col("value").isNull() | (F.length("value") == 0), F.lit("empty_value")),
        (F.col("value_text").isNull(), F.lit("invalid_utf8")),
        (F.col("value_text").contains("\u0000"), F.lit("nul_character")),
        (payload.isNull(), F.lit("malformed_json")),
        (~F.col("payload_type").startswith("OBJECT"), F.lit("not_json_object")),
    ]
    for name in REQUIRED_TEXT_FIELDS + ("event_time",):
        json_type = F.col(f"{name}_type")
        checks.append((json_type.isNull() | (json_type == "VOID"), F.lit(f"missing_{name}")))
    for name in REQUIRED_TEXT_FIELDS:
        checks.append((F.col(f"{name}_type") != "STRING", F.lit(f"invalid_type_{name}")))
        checks.append((F.col(f"{name}_text").contains("\u0000"), F.lit("nul_character")))
    for name in ("transaction_id", "customer_id", "card_id", "merchant_id"):
        length = F.length(F.trim(F.col(f"{name}_text")))
        checks.append(((length == 0) | (length > MAX_ID_LENGTH), F.lit(f"invalid_{name}")))

    checks += [
        (~plain_number, F.lit("invalid_amount")),
        (decimals > 2, F.lit("amount_too_many_decimals")),
        (integer_digits > MAX_INTEGER_DIGITS, F.lit("amount_out_of_range")),
        (amount_value <= 0, F.lit("amount_not_positive")),
        (~F.col("currency_text").isin(*sorted(ISO_4217_CODES)), F.lit("unknown_currency")),
        (~F.col("channel_text").isin(*CHANNELS), F.lit("invalid_channel")),
        (
            F.col("mcc_text").isNotNull() & ~F.col("mcc_text").rlike("^[0-9]{4}$"),
            F.lit("invalid_mcc"),
        ),
        (~F.col("event_time_type").isin("STRING", "BIGINT"), F.lit("invalid_type_event_time")),
        (F.col("event_time").isNull(), F.lit("invalid_event_time")),
        (F.col("event_time") < F.lit(OLDEST_EVENT_TIME).cast("timestamp"),
         F.lit("event_time_too_old")),
        (F.col("event_time") > F.current_timestamp() + F.expr(MAX_CLOCK_SKEW),
         F.lit("event_time_in_future")),
    ]

    reason = F.when(checks[0][0], checks[0][1])
    for condition, label in checks[1:]:
        reason = reason.when(condition, label)
    return reason


def validate(raw: DataFrame) -> DataFrame:
    """Return the raw Kafka rows with typed transaction columns and reject_reason.

    reject_reason is null for a valid transaction and names the first failed
    check otherwise. The typed columns are meaningful only where it is null.
    """
    parsed = parse(raw)
    parsed = parsed.withColumn(
        "event_time", _event_time(F.col("payload"), F.col("event_time_type"))
    )
    checked = parsed.withColumn("reject_reason", _reason(parsed))
    return checked.select(
        F.col("topic").alias("kafka_topic"),
        F.col("partition").alias("kafka_partition"),
        F.col("offset").alias("kafka_offset"),
        F.col("timestamp").alias("kafka_timestamp"),
        F.col("value").alias("raw_value"),
        "reject_reason",
        F.trim(F.col("transaction_id_text")).alias("transaction_id"),
        "event_time",
        F.trim(F.col("customer_id_text")).alias("customer_id"),
        F.trim(F.col("card_id_text")).alias("card_id"),
        F.trim(F.col("merchant_id_text")).alias("merchant_id"),
        F.col("amount_text").try_cast("decimal(12,2)").alias("amount"),
        F.col("currency_text").alias("currency"),
        F.col("channel_text").alias("channel"),
        F.col("mcc_text").alias("mcc"),
    )
