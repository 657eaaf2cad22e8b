{#- Fail for each dimension row that is still inferred: a placeholder the
    stream created for a transaction that arrived before its dimension
    row. With max_age, only rows inferred for longer than max_age fail. -#}
{#
    updated_at defaults to now() when the stream inserts a placeholder, and
    the generator's upsert sets it again when it fills the row in and clears
    is_inferred. So for an inferred row, updated_at is when it was inferred.

    Declare the test twice on a dimension: once without max_age and with
    severity warn, which reports placeholders that the generator may still
    fill in, and once with max_age, which fails the build when a
    placeholder stays unresolved for too long. The age is measured against
    the database's current time, not against a run's data interval.
#}
{% test inferred_rows_resolved(
    model,
    column_name,
    updated_at_column='updated_at',
    max_age=none
) %}

with

inferred_rows as (

    select
        *,
        now() - {{ updated_at_column }} as inferred_for
    from {{ model }}
    where {{ column_name }}
    {%- if max_age is not none %}
        and {{ updated_at_column }} < now() - interval '{{ max_age }}'
    {%- endif %}

)

select * from inferred_rows

{% endtest %}
