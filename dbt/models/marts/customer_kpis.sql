with

transactions as (

    select * from {{ ref('stg_fact_transaction') }}

),

customers as (

    select * from {{ ref('stg_dim_customer') }}

),

fraud_labels as (

    select * from {{ ref('stg_fraud_label') }}

),

labelled_transactions as (

    select
        transactions.customer_id,
        transactions.event_time,
        transactions.amount,
        transactions.currency,
        transactions.is_flagged,
        fraud_labels.transaction_id is not null as is_labelled_fraud
    from transactions
    left join fraud_labels
        on transactions.transaction_id = fraud_labels.transaction_id

),

-- NOTE: spend sums amounts across currencies without conversion.
-- currency_count shows which customers paid in more than one currency.
customer_totals as (

    select
        customer_id,
        count(*) as transaction_count,
        count(distinct currency) as currency_count,
        sum(amount) as total_spend,
        round(avg(amount), 2) as average_spend,
        count(*) filter (where is_flagged) as flagged_count,
        count(*) filter (where is_labelled_fraud) as labelled_fraud_count,
        min(event_time) as first_transaction_at,
        max(event_time) as last_transaction_at
    from labelled_transactions
    group by customer_id

),

final as (

    select
        customer_totals.customer_id,
        customers.city,
        customers.country_code,
        customers.is_inferred,
        customer_totals.transaction_count,
        customer_totals.currency_count,
        customer_totals.total_spend,
        customer_totals.average_spend,
        customer_totals.flagged_count,
        round(
            customer_totals.flagged_count::numeric
            / customer_totals.transaction_count,
            4
        ) as fraud_ratio,
        customer_totals.labelled_fraud_count,
        customer_totals.first_transaction_at,
        customer_totals.last_transaction_at
    from customer_totals
    left join customers
        on customer_totals.customer_id = customers.customer_id

)

select * from final
