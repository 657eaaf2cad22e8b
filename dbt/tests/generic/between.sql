{#- Fail for each row whose column lies outside [min_value, max_value].
    Both bounds are inclusive and optional, and nulls pass. -#}
{% test between(model, column_name, min_value=none, max_value=none) %}

{%- if min_value is none and max_value is none %}
    {{ exceptions.raise_compiler_error(
        "The between test on " ~ model ~ "." ~ column_name
        ~ " needs min_value, max_value or both."
    ) }}
{%- endif %}

with

out_of_range as (

    select {{ column_name }}
    from {{ model }}
    where
        false
        {%- if min_value is not none %}
        or {{ column_name }} < {{ min_value }}
        {%- endif %}
        {%- if max_value is not none %}
        or {{ column_name }} > {{ max_value }}
        {%- endif %}

)

select * from out_of_range

{% endtest %}
