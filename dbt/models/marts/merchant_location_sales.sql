with

transactions as (

    select * from {{ ref('stg_fact_transaction') }}

),

merchants as (

    select * from {{ ref('stg_dim_merchant') }}

),

countries as (

    select * from {{ ref('countries') }}

),

currencies as (

    select * from {{ ref('currencies') }}

),

-- A missing merchant row counts as inferred. The foreign key of the fact
-- table and the relationships test make that case an error elsewhere.
merchant_transactions as (

    select
        transactions.merchant_id,
        transactions.currency,
        transactions.amount,
        transactions.is_flagged,
        transactions.loaded_at,
        coalesce(merchants.is_inferred, true) as is_inferred,
        merchants.country_code,
        merchants.city
    from transactions
    left join merchants
        on transactions.merchant_id = merchants.merchant_id

),

-- An inferred merchant has no location yet, so its sales go to the
-- unknown member: city 'Unknown' in country 'ZZ', the code CLDR uses for
-- an unknown region.
located_transactions as (

    select
        merchant_id,
        currency,
        amount,
        is_flagged,
        loaded_at,
        is_inferred,
        case when is_inferred then 'ZZ' else country_code end as country_code,
        case when is_inferred then 'Unknown' else city end as city
    from merchant_transactions

),

location_totals as (

    select
        country_code,
        city,
        currency,
        is_inferred as is_unknown_location,
        count(distinct merchant_id) as merchant_count,
        count(*) as transaction_count,
        sum(amount) as sales_amount,
        count(*) filter (where is_flagged) as flagged_count,
        max(loaded_at) as last_loaded_at
    from located_transactions
    group by country_code, city, currency, is_inferred

),

final as (

    select
        location_totals.country_code,
        case
            when location_totals.is_unknown_location then 'Unknown'
            else countries.country_name
        end as country_name,
        countries.is_eu_member,
        location_totals.city,
        location_totals.is_unknown_location,
        location_totals.currency,
        currencies.currency_name,
        location_totals.merchant_count,
        location_totals.transaction_count,
        location_totals.sales_amount,
        location_totals.flagged_count,
        round(
            location_totals.flagged_count::numeric
            / location_totals.transaction_count,
            4
        ) as fraud_ratio,
        location_totals.last_loaded_at
    from location_totals
    left join countries
        on location_totals.country_code = countries.country_code
    left join currencies
        on location_totals.currency = currencies.currency_code

)

select * from final
