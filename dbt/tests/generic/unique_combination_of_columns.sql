{#- Fail for each combination of the given columns that occurs in more than
    one row; a null in any column counts as a value. -#}
{% test unique_combination_of_columns(model, combination_of_columns) %}

{%- set columns = combination_of_columns | join(', ') %}

with

repeated_combinations as (

    select
        {{ columns }},
        count(*) as row_count
    from {{ model }}
    group by {{ columns }}
    having count(*) > 1

)

select * from repeated_combinations

{% endtest %}
