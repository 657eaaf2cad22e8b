with

source as (

    select * from {{ source('warehouse', 'dim_customer') }}

),

renamed as (

    select
        -- ids
        customer_id,

        -- descriptive
        full_name,
        email,
        city,
        country_code::text as country_code,
        latitude,
        longitude,
        signup_date,

        -- bookkeeping
        is_inferred,
        updated_at

    from source

)

select * from renamed
