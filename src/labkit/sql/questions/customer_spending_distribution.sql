-- Customer spending distribution: how many customers fall into each band of
-- total spend, from marts.customer_kpis (one row per customer). Every band
-- appears, with zero customers when none falls into it.
--
-- NOTE: total_spend adds a customer's amounts across currencies without
-- conversion, as the mart does. The lab's generator draws amounts of the same
-- size in every currency, so the bands stay comparable, but they are not
-- euros.

with

customers as (

    select * from marts.customer_kpis

),

-- Lower bound inclusive, upper bound exclusive; the last band is open.
spend_bands as (

    select * from (
        values
            (1, 'under 100', 0, 100),
            (2, '100 to 250', 100, 250),
            (3, '250 to 500', 250, 500),
            (4, '500 to 1000', 500, 1000),
            (5, '1000 to 2500', 1000, 2500),
            (6, '2500 and more', 2500, null)
    ) as bands (band_number, spend_band, lower_bound, upper_bound)

),

banded_customers as (

    select
        spend_bands.band_number,
        spend_bands.spend_band,
        customers.customer_id,
        customers.total_spend,
        customers.flagged_count
    from spend_bands
    left join customers
        on customers.total_spend >= spend_bands.lower_bound
        and (
            spend_bands.upper_bound is null
            or customers.total_spend < spend_bands.upper_bound
        )

),

final as (

    select
        band_number,
        spend_band,
        count(customer_id) as customer_count,
        round(
            coalesce(sum(total_spend), 0), 2
        )::numeric(14, 2) as total_spend,
        coalesce(sum(flagged_count), 0)::bigint as flagged_count
    from banded_customers
    group by band_number, spend_band

)

select * from final
order by band_number
