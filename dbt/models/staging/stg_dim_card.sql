with

source as (

    select * from {{ source('warehouse', 'dim_card') }}

),

renamed as (

    select
        -- ids
        card_id,
        customer_id,

        -- descriptive
        card_brand,
        masked_pan,
        issued_on,

        -- bookkeeping
        is_inferred,
        updated_at

    from source

)

select * from renamed
