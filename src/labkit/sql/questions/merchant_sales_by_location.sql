-- Merchant sales by location: one row per merchant country and currency,
-- from marts.merchant_location_sales, whose cities this question adds up.
-- Merchants of a country are paid in its currency, so a country's sales
-- amount sums one currency. Merchants the stream inferred have no location
-- yet and appear as country ZZ, Unknown.

with

location_sales as (

    select * from marts.merchant_location_sales

),

country_totals as (

    select
        country_code::text as country_code,
        country_name,
        currency::text as currency,
        sum(merchant_count)::bigint as merchant_count,
        sum(transaction_count)::bigint as transaction_count,
        sum(sales_amount) as sales_amount,
        sum(flagged_count)::bigint as flagged_count
    from location_sales
    group by country_code, country_name, currency

),

final as (

    select
        country_code,
        country_name,
        currency,
        merchant_count,
        transaction_count,
        round(sales_amount, 2)::numeric(14, 2) as sales_amount,
        flagged_count,
        round(
            flagged_count::numeric / transaction_count, 4
        )::numeric(6, 4) as flagged_share
    from country_totals

)

select * from final
order by transaction_count desc, country_code, currency
