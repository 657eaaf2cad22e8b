-- The transactions the streaming rules flagged, with what an investigator
-- needs next to each: the merchant, the score, the rules that fired and, where
-- the generator planted fraud, its label.

with

transactions as (

    select * from {{ ref('stg_fact_transaction') }}

),

merchants as (

    select * from {{ ref('stg_dim_merchant') }}

),

fraud_labels as (

    select * from {{ ref('stg_fraud_label') }}

),

final as (

    select
        transactions.transaction_id,
        transactions.event_time,
        transactions.event_date,
        transactions.card_id,
        transactions.merchant_id,
        merchants.merchant_name,
        transactions.amount,
        transactions.currency,
        transactions.channel,
        transactions.fraud_score,
        array_to_string(transactions.fraud_rules, ', ') as fired_rules,
        fraud_labels.transaction_id is not null as is_labelled_fraud,
        fraud_labels.scenario
    from transactions
    left join merchants
        on transactions.merchant_id = merchants.merchant_id
    left join fraud_labels
        on transactions.transaction_id = fraud_labels.transaction_id
    where transactions.is_flagged

)

select * from final
