-- Daily revenue trend: one row per UTC day and currency, from
-- marts.daily_revenue. Amounts stay in their own currency, so a chart draws
-- one line per currency instead of adding euros to zloty.
--
-- event_day is the UTC midnight that starts the day, as timestamptz. A
-- Metabase whose report time zone is UTC (labkit sets it) shows it on the
-- same calendar day as the mart's event_date.

with

daily_revenue as (

    select * from marts.daily_revenue

),

final as (

    select
        event_date::timestamp at time zone 'UTC' as event_day,
        currency::text as currency,
        transaction_count,
        round(revenue, 2)::numeric(14, 2) as revenue,
        flagged_count,
        round(flagged_amount, 2)::numeric(14, 2) as flagged_amount
    from daily_revenue

)

select * from final
order by event_day, currency
