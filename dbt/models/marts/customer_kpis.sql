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

countries as (

    select * from {{ ref('countries') }}

),

labelled_transactions as (

    select
        transactions.customer_id,
        transactions.event_time,
        transactions.amount,
        transactions.currency,
        transactions.is_flagged,
        transactions.loaded_at,
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
        max(event_time) as last_transaction_at,
        max(loaded_at) as last_loaded_at
    from labelled_transactions
    group by customer_id

),

-- A missing customer row counts as inferred. The foreign key of the fact
-- table and the relationships test make that case an error elsewhere.
customer_attributes as (

    select
        customer_totals.customer_id,
        coalesce(customers.is_inferred, true) as is_inferred,
        customers.city,
        customers.country_code
    from customer_totals
    left join customers
        on customer_totals.customer_id = customers.customer_id

),

-- An inferred customer is shown as the unknown member: city 'Unknown' in
-- country 'ZZ', the code CLDR uses for an unknown region.
customer_locations as (

    select
        customer_id,
        is_inferred,
        case when is_inferred then 'Unknown' else city end as city,
        case when is_inferred then 'ZZ' else country_code end as country_code
    from customer_attributes

),

final as (

    select
        customer_totals.customer_id,
        customer_locations.city,
        customer_locations.country_code,
        case
            when customer_locations.is_inferred then 'Unknown'
            else countries.country_name
        end as country_name,
        customer_locations.is_inferred,
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
        customer_totals.last_transaction_at,
        customer_totals.last_loaded_at
    from customer_totals
    inner join customer_locations
        on customer_totals.customer_id = customer_locations.customer_id
    left join countries
        on customer_locations.country_code = countries.country_code

)

select * from final
