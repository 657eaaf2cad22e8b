with

daily_summary as (

    select * from {{ ref('daily_fraud_summary') }}

),

scored_transactions as (

    select * from {{ ref('scored_transactions') }}

),

card_precision as (

    select * from {{ ref('card_precision_daily') }}

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

-- The handbook's test week, when the data reaches into it.
test_week_period as (

    select
        'test_week' as period_type,
        date '{{ var("test_week_start") }}' as first_event_date,
        date '{{ var("test_week_end") }}' as last_event_date,
        sum(transaction_count)::bigint as transaction_count,
        sum(labelled_fraud_count)::bigint as labelled_fraud_count,
        sum(flagged_count)::bigint as flagged_count,
        sum(true_positive_count)::bigint as true_positive_count
    from daily_summary
    where event_date between date '{{ var("test_week_start") }}'
        and date '{{ var("test_week_end") }}'
    having count(*) > 0

),

periods as (

    select * from day_periods
    union all
    select * from overall_period
    union all
    select * from test_week_period

),

-- Average precision ranks a period's transactions by score. Transactions
-- with equal scores form one threshold, so each score is one row here.
score_thresholds as (

    select
        periods.period_type,
        periods.first_event_date,
        scored_transactions.fraud_score,
        count(*) as transaction_count,
        count(*) filter (
            where scored_transactions.is_labelled_fraud
        ) as fraud_count
    from periods
    inner join scored_transactions
        on scored_transactions.event_date
        between periods.first_event_date and periods.last_event_date
    group by
        periods.period_type,
        periods.first_event_date,
        scored_transactions.fraud_score

),

-- At each threshold: the transactions ranked so far and the frauds among them.
ranked_thresholds as (

    select
        period_type,
        first_event_date,
        fraud_count,
        sum(transaction_count) over period_by_score as ranked_count,
        sum(fraud_count) over period_by_score as found_count
    from score_thresholds
    window period_by_score as (
        partition by period_type, first_event_date
        order by fraud_score desc
    )

),

-- Each fraud counts the precision at its threshold; the mean over frauds is
-- the average precision (null without fraud).
average_precisions as (

    select
        period_type,
        first_event_date,
        sum(fraud_count * found_count::numeric / ranked_count)
        / nullif(sum(fraud_count), 0) as average_precision
    from ranked_thresholds
    group by period_type, first_event_date

),

-- A day row takes its day's card precision from the overall period;
-- the overall and test week rows take the mean over their days.
card_precisions as (

    select
        periods.period_type,
        periods.first_event_date,
        avg(card_precision.card_precision) as card_precision_at_k
    from periods
    inner join card_precision
        on card_precision.period_type = case
            when periods.period_type = 'test_week' then 'test_week'
            else 'overall'
        end
        and card_precision.event_date
        between periods.first_event_date and periods.last_event_date
    group by periods.period_type, periods.first_event_date

),

-- nullif leaves precision null when nothing was flagged and recall null
-- when nothing was labelled, instead of dividing by zero.
rates as (

    select
        periods.*,
        true_positive_count::numeric / nullif(flagged_count, 0) as flag_precision,
        true_positive_count::numeric / nullif(labelled_fraud_count, 0) as flag_recall
    from periods

),

final as (

    select
        rates.period_type,
        rates.first_event_date,
        rates.last_event_date,
        rates.transaction_count,
        rates.labelled_fraud_count,
        rates.flagged_count,
        rates.true_positive_count,
        rates.flagged_count - rates.true_positive_count as false_positive_count,
        rates.labelled_fraud_count - rates.true_positive_count as false_negative_count,
        round(rates.flag_precision, 4) as flag_precision,
        round(rates.flag_recall, 4) as flag_recall,
        -- 2TP / (2TP + FP + FN): defined whenever something was flagged or labelled.
        round(
            2 * rates.true_positive_count::numeric / nullif(
                rates.flagged_count + rates.labelled_fraud_count, 0
            ),
            4
        ) as flag_f1,
        round(average_precisions.average_precision, 4) as average_precision,
        round(card_precisions.card_precision_at_k, 4) as card_precision_at_k
    from rates
    left join average_precisions
        on average_precisions.period_type = rates.period_type
        and average_precisions.first_event_date = rates.first_event_date
    left join card_precisions
        on card_precisions.period_type = rates.period_type
        and card_precisions.first_event_date = rates.first_event_date

)

select * from final
