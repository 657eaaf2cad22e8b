with

source as (

    select * from {{ source('warehouse', 'fraud_label') }}

),

renamed as (

    select
        transaction_id,
        scenario

    from source

)

select * from renamed
