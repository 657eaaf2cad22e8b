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

countries as (

    select * from {{ ref('countries') }}

),

-- The message's mcc wins over the merchant's, because it is what the
-- stream saw. When neither has one, the mcc is 'unknown'. An inferred
-- merchant has no location yet, so its sales go to city 'unknown' in
-- country 'ZZ', the code CLDR uses for an unknown region.
located_transactions as (

    select
        coalesce(transactions.mcc, merchants.mcc, 'unknown') as mcc,
        coalesce(merchants.country_code, 'ZZ') as country_code,
        coalesce(merchants.city, 'unknown') as city,
        transactions.amount,
        transactions.is_flagged
    from transactions
    left join merchants
        on transactions.merchant_id = merchants.merchant_id

),

-- NOTE: sales_amount sums amounts across currencies without conversion.
category_totals as (

    select
        mcc,
        country_code,
        city,
        count(*) as sales_count,
        sum(amount) as sales_amount,
        count(*) filter (where is_flagged) as flagged_count
    from located_transactions
    group by mcc, country_code, city

),

final as (

    select
        category_totals.mcc,
        categories.description as mcc_description,
        categories.risk_level,
        category_totals.country_code,
        coalesce(countries.country_name, 'Unknown') as country_name,
        category_totals.city,
        category_totals.sales_count,
        category_totals.sales_amount,
        category_totals.flagged_count,
        round(
            category_totals.flagged_count::numeric
            / category_totals.sales_count,
            4
        ) as fraud_ratio
    from category_totals
    left join categories
        on category_totals.mcc = categories.mcc
    left join countries
        on category_totals.country_code = countries.country_code

)

select * from final
