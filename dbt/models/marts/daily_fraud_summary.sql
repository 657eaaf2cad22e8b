with

transactions as (

    select * from {{ ref('stg_fact_transaction') }}

),

fraud_labels as (

    select * from {{ ref('stg_fraud_label') }}

),

-- Labels of transactions that are not loaded yet drop out here.
labelled_transactions as (

    select
        transactions.event_date,
        transactions.is_flagged,
        fraud_labels.transaction_id is not null as is_labelled_fraud
    from transactions
    left join fraud_labels
        on transactions.transaction_id = fraud_labels.transaction_id

),

daily_counts as (

    select
        event_date,
        count(*) as transaction_count,
        count(*) filter (where is_flagged) as flagged_count,
        count(*) filter (where is_labelled_fraud) as labelled_fraud_count,
        count(*) filter (
            where is_flagged and is_labelled_fraud
        ) as true_positive_count
    from labelled_transactions
    group by event_date

),

final as (

    select
        event_date,
        transaction_count,
        flagged_count,
        labelled_fraud_count,
        true_positive_count,
        flagged_count - true_positive_count as false_positive_count,
        labelled_fraud_count - true_positive_count as false_negative_count,
        round(
            true_positive_count::numeric / nullif(flagged_count, 0), 4
        ) as flag_precision,
        round(
            true_positive_count::numeric / nullif(labelled_fraud_count, 0), 4
        ) as flag_recall
    from daily_counts

)

select * from final
