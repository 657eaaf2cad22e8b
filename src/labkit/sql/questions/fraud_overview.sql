-- Fraud overview: one row per UTC day with the transactions that the
-- streaming rules flagged, from marts.daily_fraud_summary. Next to the flags
-- stand the generator's fraud labels and the flagged transactions among them.

with

daily_fraud as (

    select * from marts.daily_fraud_summary

),

final as (

    select
        event_date::timestamp at time zone 'UTC' as event_day,
        transaction_count,
        flagged_count,
        round(fraud_ratio, 4)::numeric(6, 4) as flagged_share,
        labelled_fraud_count,
        true_positive_count as flagged_fraud_count
    from daily_fraud

)

select * from final
order by event_day
