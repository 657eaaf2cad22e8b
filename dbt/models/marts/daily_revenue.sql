{{
    config(
        materialized='incremental',
        unique_key=['event_date', 'currency'],
        incremental_strategy='delete+insert',
        on_schema_change='fail'
    )
}}

with

transactions as (

    select * from {{ ref('stg_fact_transaction') }}

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

-- An incremental run recomputes whole days, so a day's totals always
-- come from all of its rows, late ones included.
transactions_to_rebuild as (

    select * from transactions
    {% if is_incremental() %}
    where event_date in (select event_date from days_to_rebuild)
    {% endif %}

),

daily_totals as (

    select
        event_date,
        currency,
        count(*) as transaction_count,
        sum(amount) as revenue,
        count(*) filter (where is_flagged) as flagged_count,
        coalesce(sum(amount) filter (where is_flagged), 0) as flagged_amount,
        max(loaded_at) as last_loaded_at
    from transactions_to_rebuild
    group by event_date, currency

)

select * from daily_totals
