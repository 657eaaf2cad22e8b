-- Flagged transactions: the 500 most recent payments that the streaming rules
-- flagged, newest first, from marts.flagged_transactions.

with

flagged as (

    select * from marts.flagged_transactions

),

final as (

    select
        event_time,
        transaction_id,
        card_id,
        coalesce(merchant_name, merchant_id) as merchant,
        amount,
        currency,
        fraud_score,
        fired_rules,
        is_labelled_fraud
    from flagged

)

select * from final
order by event_time desc, transaction_id
limit 500
