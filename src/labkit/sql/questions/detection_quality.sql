-- Detection quality: how well the streaming rules' flags match the
-- generator's fraud labels, per UTC day, from marts.detection_quality. Only
-- days with at least one labelled fraud appear, because recall has no value
-- on a day without any.

with

detection_quality as (

    select * from marts.detection_quality

),

labelled_days as (

    select * from detection_quality
    where period_type = 'day' and labelled_fraud_count > 0

),

final as (

    select
        first_event_date::timestamp at time zone 'UTC' as event_day,
        transaction_count,
        labelled_fraud_count,
        flagged_count,
        true_positive_count,
        false_positive_count,
        false_negative_count,
        round(flag_precision, 4)::numeric(6, 4) as flag_precision,
        round(flag_recall, 4)::numeric(6, 4) as flag_recall
    from labelled_days

)

select * from final
order by event_day
