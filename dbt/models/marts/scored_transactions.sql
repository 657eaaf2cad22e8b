{{ config(materialized='view') }}

-- Each loaded transaction with the streaming rules' score and flag and the
-- generator's fraud label: the base of every detection quality mart.

with

transactions as (

    select * from {{ ref('stg_fact_transaction') }}

),

fraud_labels as (

    select * from {{ ref('stg_fraud_label') }}

),

final as (

    select
        transactions.transaction_id,
        transactions.event_date,
        transactions.card_id,
        transactions.fraud_score,
        transactions.is_flagged,
        fraud_labels.transaction_id is not null as is_labelled_fraud,
        fraud_labels.scenario
    from transactions
    left join fraud_labels
        on transactions.transaction_id = fraud_labels.transaction_id

)

select * from final
