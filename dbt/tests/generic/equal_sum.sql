{#- Fail when the column's sum differs from the sum of compare_column in
    compare_model, per group_by group or over all rows. -#}
{#
    group_by names columns that both models have, such as event_date. A
    group missing from one side counts as a mismatch.

    A mart table is a snapshot while its source keeps growing as the stream
    loads rows. Give watermark_column (the latest load time the tested
    model covers) and compare_watermark_column (the load time of each
    compare row) to leave out compare rows loaded after the snapshot.
    NOTE: a row committed after the snapshot but stamped at or before the
    watermark still counts and fails the test. Because loaded_at defaults
    to now(), the transaction start time, a stream transaction that spans
    the snapshot can do that.
#}
{% test equal_sum(
    model,
    column_name,
    compare_model,
    compare_column,
    group_by=[],
    watermark_column=none,
    compare_watermark_column=none
) %}

{%- if (watermark_column is none) != (compare_watermark_column is none) %}
    {{ exceptions.raise_compiler_error(
        "The equal_sum test on " ~ model ~ "." ~ column_name
        ~ " needs both watermark_column and compare_watermark_column,"
        ~ " or neither."
    ) }}
{%- endif %}

with

model_totals as (

    select
        {%- for column in group_by %}
        {{ column }},
        {%- endfor %}
        sum({{ column_name }}) as total
    from {{ model }}
    {%- if group_by %}
    group by {{ group_by | join(', ') }}
    {%- endif %}

),

compare_totals as (

    select
        {%- for column in group_by %}
        {{ column }},
        {%- endfor %}
        sum({{ compare_column }}) as total
    from {{ compare_model }}
    {%- if watermark_column is not none %}
    where {{ compare_watermark_column }} <= (
        select max({{ watermark_column }}) from {{ model }}
    )
    {%- endif %}
    {%- if group_by %}
    group by {{ group_by | join(', ') }}
    {%- endif %}

),

{# Postgres runs a full join only on equality conditions, so the groups
   are matched with "=" and the group_by columns must not be null. #}
compared as (

    select
        {%- for column in group_by %}
        coalesce(model_totals.{{ column }}, compare_totals.{{ column }})
            as {{ column }},
        {%- endfor %}
        model_totals.total as model_total,
        compare_totals.total as compare_total
    from model_totals
    {%- if group_by %}
    full outer join compare_totals
        on
        {%- for column in group_by %}
        {% if not loop.first %}and {% endif -%}
        model_totals.{{ column }} = compare_totals.{{ column }}
        {%- endfor %}
    {%- else %}
    cross join compare_totals
    {%- endif %}

),

mismatches as (

    select * from compared
    where model_total is distinct from compare_total

)

select * from mismatches

{% endtest %}
