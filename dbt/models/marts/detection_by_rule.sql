-- Each streaming rule's firings, precision and recall, over the whole run and
-- over the handbook's test week when the data reaches into it.

with

transactions as (

    select * from {{ ref('stg_fact_transaction') }}

),

fraud_labels as (

    select * from {{ ref('stg_fraud_label') }}

),

periods as (

    {{ detection_periods('transactions') }}

),

period_transactions as (

    select
        periods.period_type,
        transactions.transaction_id,
        transactions.fraud_rules,
        fraud_labels.transaction_id is not null as is_labelled_fraud
    from periods
    inner join transactions
        on transactions.event_date
        between periods.first_event_date and periods.last_event_date
    left join fraud_labels
        on transactions.transaction_id = fraud_labels.transaction_id

),

period_frauds as (

    select
        period_type,
        count(*) filter (where is_labelled_fraud) as labelled_fraud_count
    from period_transactions
    group by period_type

),

-- One row per rule that fired on a transaction.
firings as (

    select
        period_transactions.period_type,
        fired.rule_name,
        period_transactions.is_labelled_fraud,
        cardinality(period_transactions.fraud_rules) = 1 as is_only_rule
    from period_transactions
    cross join lateral unnest(period_transactions.fraud_rules) as fired (rule_name)

),

final as (

    select
        firings.period_type,
        firings.rule_name,
        count(*) as fired_count,
        count(*) filter (where firings.is_labelled_fraud) as fired_on_fraud_count,
        count(*) filter (
            where firings.is_labelled_fraud and firings.is_only_rule
        ) as only_rule_on_fraud_count,
        round(
            count(*) filter (where firings.is_labelled_fraud)::numeric / count(*), 4
        ) as rule_precision,
        round(
            count(*) filter (where firings.is_labelled_fraud)::numeric
            / nullif(period_frauds.labelled_fraud_count, 0),
            4
        ) as rule_recall
    from firings
    inner join period_frauds
        on period_frauds.period_type = firings.period_type
    group by firings.period_type, firings.rule_name, period_frauds.labelled_fraud_count

)

select * from final
