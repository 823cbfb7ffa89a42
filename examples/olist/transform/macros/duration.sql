{#- Seconds between two timestamps, the same way in DuckDB and PostgreSQL. -#}
{% macro seconds_between(start_ts, end_ts) -%}
    (extract(epoch from {{ end_ts }}) - extract(epoch from {{ start_ts }}))
{%- endmacro %}
