{#-
    Use a model's custom schema name as is, so staging models land in
    "staging" and marts in "marts". dbt's default would prefix the target
    schema ("analytics_marts"). Nodes without a custom schema use the
    target schema.
-#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema }}
    {%- else -%}
        {{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}
