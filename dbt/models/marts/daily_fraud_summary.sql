{{
    config(
        materialized='incremental',
        unique_key='event_date',
        incremental_strategy='delete+insert',
        on_schema_change='fail'
    )
}}

with

transactions as (

    select * from {{ ref('stg_fact_transaction') }}

),

fraud_labels as (

    select * from {{ ref('stg_fraud_label') }}

),

{% if is_incremental() %}

days_to_rebuild as (

    {{ days_to_rebuild(
        transactions='transactions',
        mart=this,
        lookback_days=var('lookback_days'),
        start=var('start'),
        end=var('end')
    ) }}

),

{% endif %}

-- An incremental run recomputes whole days, so a day's counts always
-- come from all of its rows, late ones included.
transactions_to_rebuild as (

    select * from transactions
    {% if is_incremental() %}
    where event_date in (select event_date from days_to_rebuild)
    {% endif %}

),

-- Labels of transactions that are not loaded yet drop out here.
labelled_transactions as (

    select
        transactions_to_rebuild.event_date,
        transactions_to_rebuild.is_flagged,
        transactions_to_rebuild.loaded_at,
        fraud_labels.transaction_id is not null as is_labelled_fraud
    from transactions_to_rebuild
    left join fraud_labels
        on transactions_to_rebuild.transaction_id
        = fraud_labels.transaction_id

),

daily_counts as (

    select
        event_date,
        count(*) as transaction_count,
        count(*) filter (where is_flagged) as flagged_count,
        count(*) filter (where is_labelled_fraud) as labelled_fraud_count,
        count(*) filter (
            where is_flagged and is_labelled_fraud
        ) as true_positive_count,
        max(loaded_at) as last_loaded_at
    from labelled_transactions
    group by event_date

),

final as (

    select
        event_date,
        transaction_count,
        flagged_count,
        round(flagged_count::numeric / transaction_count, 4) as fraud_ratio,
        labelled_fraud_count,
        true_positive_count,
        last_loaded_at
    from daily_counts

)

select * from final
