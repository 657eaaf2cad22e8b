-- How much of each fraud scenario the streaming rules flag, over the whole
-- run and over the handbook's test week when the data reaches into it.

with

scored_transactions as (

    select * from {{ ref('scored_transactions') }}

),

periods as (

    {{ detection_periods('scored_transactions') }}

),

final as (

    select
        periods.period_type,
        scored_transactions.scenario,
        count(*) as fraud_count,
        count(*) filter (where scored_transactions.is_flagged) as flagged_count,
        round(
            count(*) filter (where scored_transactions.is_flagged)::numeric / count(*), 4
        ) as scenario_recall,
        round(avg(scored_transactions.fraud_score), 4) as mean_fraud_score
    from periods
    inner join scored_transactions
        on scored_transactions.event_date
        between periods.first_event_date and periods.last_event_date
    where scored_transactions.is_labelled_fraud
    group by periods.period_type, scored_transactions.scenario

)

select * from final
