{{
    config(
        indexes=[{'columns': ['event_date']}]
    )
}}

-- The investigator's view of each morning: one row per card and UTC day, the
-- card's highest score that day and whether any of its payments that day was
-- fraud. card_precision_daily ranks these rows day by day.

with

scored_transactions as (

    select * from {{ ref('scored_transactions') }}

),

final as (

    select
        event_date,
        card_id,
        max(fraud_score) as card_score,
        bool_or(is_labelled_fraud) as is_fraudulent,
        count(*) as transaction_count
    from scored_transactions
    group by event_date, card_id

)

select * from final
