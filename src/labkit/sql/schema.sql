-- The lab's warehouse: a star schema loaded by the streaming query and the
-- generator. Every statement is idempotent, so applying the file twice is safe.

create table if not exists dim_customer (
    customer_id   text primary key,
    full_name     text,
    email         text,
    city          text,
    country_code  char(2),
    latitude      numeric(9, 6),
    longitude     numeric(9, 6),
    signup_date   date,
    -- An inferred row was created by the stream for a transaction that
    -- arrived before its customer; the generator fills it in later.
    is_inferred   boolean not null default false,
    updated_at    timestamptz not null default now()
);

create table if not exists dim_card (
    card_id       text primary key,
    customer_id   text references dim_customer (customer_id),
    card_brand    text,
    masked_pan    text,
    issued_on     date,
    is_inferred   boolean not null default false,
    updated_at    timestamptz not null default now()
);

create table if not exists dim_merchant (
    merchant_id   text primary key,
    merchant_name text,
    mcc           char(4),
    city          text,
    country_code  char(2),
    latitude      numeric(9, 6),
    longitude     numeric(9, 6),
    is_inferred   boolean not null default false,
    updated_at    timestamptz not null default now()
);

create table if not exists fact_transaction (
    transaction_id  text primary key,
    event_time      timestamptz not null,
    customer_id     text not null references dim_customer (customer_id),
    card_id         text not null references dim_card (card_id),
    merchant_id     text not null references dim_merchant (merchant_id),
    amount          numeric(12, 2) not null check (amount > 0),
    currency        char(3) not null,
    channel         text not null,
    mcc             char(4),
    fraud_score     numeric(4, 3) not null default 0,
    is_flagged      boolean not null default false,
    fraud_rules     text[] not null default '{}',
    -- What the stateful rules read (see labkit.features); null where there was
    -- nothing to read, such as travel for an online payment.
    card_payments_10m         integer,
    card_prior_payments       integer,
    card_mean_amount          numeric(12, 2),
    travel_km                 numeric(9, 1),
    travel_kmh                numeric(10, 1),
    terminal_confirmed_frauds integer not null default 0,
    -- Older than the watermark when it arrived: loaded without card features.
    late_for_card_rules       boolean not null default false,
    kafka_topic     text not null,
    kafka_partition integer not null,
    kafka_offset    bigint not null,
    kafka_timestamp timestamptz,
    loaded_at       timestamptz not null default now()
);

create index if not exists fact_transaction_event_time_idx
    on fact_transaction (event_time);

-- Ground truth from the generator. It never travels with the Kafka message,
-- so the streaming rules cannot peek at it.
create table if not exists fraud_label (
    transaction_id text primary key,
    scenario       text not null
);

-- Messages the stream could not load, kept byte for byte with the reason.
create table if not exists quarantine (
    kafka_topic     text not null,
    kafka_partition integer not null,
    kafka_offset    bigint not null,
    raw_value       bytea,
    reason          text not null,
    seen_at         timestamptz not null default now(),
    primary key (kafka_topic, kafka_partition, kafka_offset)
);

-- Valid messages whose transaction_id was already loaded from another offset.
create table if not exists duplicate_message (
    kafka_topic     text not null,
    kafka_partition integer not null,
    kafka_offset    bigint not null,
    transaction_id  text not null,
    seen_at         timestamptz not null default now(),
    primary key (kafka_topic, kafka_partition, kafka_offset)
);

-- One row per micro-batch the streaming query committed; a replayed batch
-- overwrites its own row.
create table if not exists stream_batch (
    query_name   text not null,
    batch_id     bigint not null,
    messages     integer not null,
    loaded       integer not null,
    duplicates   integer not null,
    quarantined  integer not null,
    flagged      integer not null,
    late         integer not null default 0,
    started_at   timestamptz not null,
    finished_at  timestamptz not null,
    primary key (query_name, batch_id)
);
