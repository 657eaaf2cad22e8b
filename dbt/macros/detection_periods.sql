{#
    The periods that detection quality is measured over, as rows of
    (period_type, first_event_date, last_event_date): 'overall' from the first
    to the last day of dated_relation, and 'test_week', the fraud detection
    handbook's test week (vars test_week_start and test_week_end), when
    dated_relation has rows in it. dated_relation needs an event_date column.
#}
{% macro detection_periods(dated_relation) %}

    select
        'overall' as period_type,
        min(event_date) as first_event_date,
        max(event_date) as last_event_date
    from {{ dated_relation }}
    having count(*) > 0

    union all

    select
        'test_week' as period_type,
        date '{{ var("test_week_start") }}' as first_event_date,
        date '{{ var("test_week_end") }}' as last_event_date
    where exists (
        select 1 from {{ dated_relation }}
        where event_date between date '{{ var("test_week_start") }}'
            and date '{{ var("test_week_end") }}'
    )

{% endmacro %}
