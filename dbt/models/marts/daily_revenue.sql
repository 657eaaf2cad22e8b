with

transactions as (

    select * from {{ ref('stg_fact_transaction') }}

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
    from transactions
    group by event_date, currency

)

select * from daily_totals
