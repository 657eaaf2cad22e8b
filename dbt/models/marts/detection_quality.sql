with

daily_summary as (

    select * from {{ ref('daily_fraud_summary') }}

),

day_periods as (

    select
        'day' as period_type,
        event_date as first_event_date,
        event_date as last_event_date,
        transaction_count,
        labelled_fraud_count,
        flagged_count,
        true_positive_count
    from daily_summary

),

-- Counts add up across days, while precision and recall do not, so the
-- overall row sums the counts and computes its rates from the sums. An
-- aggregate without group by returns a row even for an empty input, and
-- the having clause drops it.
overall_period as (

    select
        'overall' as period_type,
        min(event_date) as first_event_date,
        max(event_date) as last_event_date,
        sum(transaction_count)::bigint as transaction_count,
        sum(labelled_fraud_count)::bigint as labelled_fraud_count,
        sum(flagged_count)::bigint as flagged_count,
        sum(true_positive_count)::bigint as true_positive_count
    from daily_summary
    having count(*) > 0

),

periods as (

    select * from day_periods
    union all
    select * from overall_period

),

-- nullif leaves precision null when nothing was flagged and recall null
-- when nothing was labelled, instead of dividing by zero.
final as (

    select
        period_type,
        first_event_date,
        last_event_date,
        transaction_count,
        labelled_fraud_count,
        flagged_count,
        true_positive_count,
        flagged_count - true_positive_count as false_positive_count,
        labelled_fraud_count - true_positive_count as false_negative_count,
        round(
            true_positive_count::numeric / nullif(flagged_count, 0), 4
        ) as flag_precision,
        round(
            true_positive_count::numeric / nullif(labelled_fraud_count, 0), 4
        ) as flag_recall
    from periods

)

select * from final
