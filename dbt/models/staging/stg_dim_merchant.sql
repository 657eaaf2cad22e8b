with

source as (

    select * from {{ source('warehouse', 'dim_merchant') }}

),

renamed as (

    select
        -- ids
        merchant_id,

        -- descriptive
        merchant_name,
        mcc::text as mcc,
        city,
        country_code::text as country_code,
        latitude,
        longitude,

        -- bookkeeping
        is_inferred,
        updated_at

    from source

)

select * from renamed
