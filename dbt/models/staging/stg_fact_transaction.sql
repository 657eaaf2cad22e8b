with

source as (

    select * from {{ source('warehouse', 'fact_transaction') }}

),

renamed as (

    select
        -- ids
        transaction_id,
        customer_id,
        card_id,
        merchant_id,

        -- time, with event_date as the UTC calendar day of the payment
        event_time,
        (event_time at time zone 'UTC')::date as event_date,

        -- payment, with char(n) codes cast to text for joins with text
        amount,
        currency::text as currency,
        channel,
        mcc::text as mcc,

        -- streaming fraud rules, and the features the stateful ones read
        fraud_score,
        is_flagged,
        fraud_rules,
        card_payments_10m,
        card_prior_payments,
        card_mean_amount,
        travel_km,
        travel_kmh,
        terminal_confirmed_frauds,
        late_for_card_rules,

        -- lineage
        kafka_topic,
        kafka_partition,
        kafka_offset,
        kafka_timestamp,
        loaded_at

    from source

)

select * from renamed
