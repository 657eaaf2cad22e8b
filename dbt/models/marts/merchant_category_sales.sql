with

transactions as (

    select * from {{ ref('stg_fact_transaction') }}

),

merchants as (

    select * from {{ ref('stg_dim_merchant') }}

),

categories as (

    select * from {{ ref('merchant_category_codes') }}

),

currencies as (

    select * from {{ ref('currencies') }}

),

-- The message's mcc wins over the merchant's, because it is what the
-- stream saw. An inferred merchant row keeps the mcc of the message that
-- created it, so its sales still land in their category.
categorized_transactions as (

    select
        coalesce(transactions.mcc, merchants.mcc) as mcc,
        transactions.currency,
        transactions.merchant_id,
        transactions.amount,
        transactions.is_flagged,
        transactions.loaded_at
    from transactions
    left join merchants
        on transactions.merchant_id = merchants.merchant_id

),

-- Sales without any category code go to the unknown member, mcc
-- 'unknown'.
category_totals as (

    select
        coalesce(mcc, 'unknown') as mcc,
        currency,
        count(distinct merchant_id) as merchant_count,
        count(*) as transaction_count,
        sum(amount) as sales_amount,
        count(*) filter (where is_flagged) as flagged_count,
        max(loaded_at) as last_loaded_at
    from categorized_transactions
    group by coalesce(mcc, 'unknown'), currency

),

final as (

    select
        category_totals.mcc,
        case
            when category_totals.mcc = 'unknown' then 'Unknown'
            else categories.description
        end as mcc_description,
        case
            when category_totals.mcc = 'unknown' then 'unknown'
            else categories.risk_level
        end as risk_level,
        category_totals.currency,
        currencies.currency_name,
        category_totals.merchant_count,
        category_totals.transaction_count,
        category_totals.sales_amount,
        category_totals.flagged_count,
        round(
            category_totals.flagged_count::numeric
            / category_totals.transaction_count,
            4
        ) as fraud_ratio,
        category_totals.last_loaded_at
    from category_totals
    left join categories
        on category_totals.mcc = categories.mcc
    left join currencies
        on category_totals.currency = currencies.currency_code

)

select * from final
