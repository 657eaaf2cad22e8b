{% set k = var('card_precision_k') %}

-- Card precision at k (CP@k), the handbook's measure of a day's work for an
-- investigator who can check k cards: rank the day's cards by score and take
-- the share of fraudulent cards among the top k.
--
-- Two assessments (detection_periods): overall, and the handbook's test week
-- when the data reaches into it. A card found fraudulent in a day's top k is blocked, so
-- later days of the same assessment leave it out. The test week also leaves
-- out the cards with a fraud in the feedback delay before it. Each day depends
-- on the cards blocked before it, so a recursive query walks the days in
-- order, carrying the blocked cards as the keys of a jsonb object.

with recursive

card_days as (

    select * from {{ ref('card_day_scores') }}

),

periods as (

    {{ detection_periods('card_days') }}

),

assessments as (

    select
        period_type as assessment,
        first_event_date as first_day,
        last_event_date as last_day,
        case
            when period_type = 'test_week' then {{ var('feedback_delay_days') }}
            else 0
        end as delay_days
    from periods

),

assessment_days as (

    select
        assessments.assessment,
        calendar_day::date as event_date,
        calendar_day::date - assessments.first_day + 1 as day_number
    from assessments
    cross join lateral generate_series(
        assessments.first_day, assessments.last_day, interval '1 day'
    ) as calendar_day

),

known_before as (

    select
        assessments.assessment,
        coalesce(
            jsonb_object_agg(card_days.card_id, true)
                filter (where card_days.card_id is not null),
            '{}'::jsonb
        ) as card_ids
    from assessments
    left join card_days
        on card_days.is_fraudulent
        and card_days.event_date >= assessments.first_day - assessments.delay_days
        and card_days.event_date < assessments.first_day
    group by assessments.assessment

),

ranked_days (
    assessment, day_number, event_date, cards_ranked, fraudulent_cards, found_cards,
    blocked
) as (

    select assessment, 0, null::date, 0::bigint, 0::bigint, 0::bigint, card_ids
    from known_before

    union all

    select
        ranked_days.assessment,
        assessment_days.day_number,
        assessment_days.event_date,
        today.cards_ranked,
        today.fraudulent_cards,
        today.found_cards,
        ranked_days.blocked || today.found_ids
    from ranked_days
    inner join assessment_days
        on assessment_days.assessment = ranked_days.assessment
        and assessment_days.day_number = ranked_days.day_number + 1
    cross join lateral (
        select
            count(*) as cards_ranked,
            count(*) filter (where ranked.is_fraudulent) as fraudulent_cards,
            count(*) filter (
                where ranked.is_fraudulent and ranked.position <= {{ k }}
            ) as found_cards,
            coalesce(
                jsonb_object_agg(ranked.card_id, true) filter (
                    where ranked.is_fraudulent and ranked.position <= {{ k }}
                ),
                '{}'::jsonb
            ) as found_ids
        from (
            select
                card_days.card_id,
                card_days.is_fraudulent,
                row_number() over (
                    order by card_days.card_score desc, card_days.card_id collate "C"
                ) as position
            from card_days
            where card_days.event_date = assessment_days.event_date
                and not ranked_days.blocked ? card_days.card_id
        ) as ranked
    ) as today

),

final as (

    select
        assessment as period_type,
        event_date,
        cards_ranked,
        fraudulent_cards,
        found_cards,
        round(found_cards::numeric / {{ k }}, 4) as card_precision
    from ranked_days
    where day_number > 0

)

select * from final
