-- Merchant activity by category: one row per merchant category code, from
-- marts.merchant_category_sales. The mart keeps one row per category and
-- currency, and this question adds up the counts of a category across its
-- currencies. Counts add up where amounts in different currencies would not,
-- so the sales amounts stay in the location question.

with

category_sales as (

    select * from marts.merchant_category_sales

),

category_totals as (

    select
        mcc::text as mcc,
        mcc_description,
        risk_level,
        sum(transaction_count)::bigint as transaction_count,
        sum(flagged_count)::bigint as flagged_count
    from category_sales
    group by mcc, mcc_description, risk_level

),

final as (

    select
        mcc,
        mcc_description,
        risk_level,
        transaction_count,
        flagged_count,
        round(
            flagged_count::numeric / transaction_count, 4
        )::numeric(6, 4) as flagged_share
    from category_totals

)

select * from final
order by transaction_count desc, mcc
