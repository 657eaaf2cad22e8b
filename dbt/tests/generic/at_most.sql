{#- Fail for each row whose column is greater than other_column of the same
    row, such as more flagged transactions than transactions. A row with a
    null in either column passes. -#}
{% test at_most(model, column_name, other_column) %}

with

too_large as (

    select
        {{ column_name }},
        {{ other_column }}
    from {{ model }}
    where {{ column_name }} > {{ other_column }}

)

select * from too_large

{% endtest %}
