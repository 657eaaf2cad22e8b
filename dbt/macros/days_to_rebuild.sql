{#-
    Select the UTC days (event_date) that an incremental daily mart
    rebuilds on this run. The mart deletes and re-inserts these days by its
    unique key, so each of them is recomputed from all of its rows.
-#}
{#
    A day is rebuilt when any of these is true:

    - A transaction of that day was loaded after the mart's newest
      last_loaded_at. This covers new days and late rows, whose event_time
      falls on a day that an earlier run built already.
    - It is the mart's newest day or one of the lookback_days days before
      it. This catches a row of a recent day that was committed after the
      previous run but stamped with an older loaded_at, because loaded_at
      defaults to now(), the start of the loading transaction.
    - It overlaps the interval [start, end), when both are given, so that
      a scheduled run or a backfill over a date range rebuilds its days.

    transactions names a relation or CTE with event_date and loaded_at.
    mart is the existing mart ({{ this }}), with event_date and
    last_loaded_at. The model passes its vars in, so that unit tests can
    override them.

    NOTE: a transaction deleted from the source, or a fraud label added
    after its day was built, leaves no newer loaded_at behind. Such a day
    is corrected only when it falls in the lookback window or the interval,
    or by a run with --full-refresh.
#}
{% macro days_to_rebuild(
    transactions,
    mart,
    lookback_days,
    start=none,
    end=none
) %}

{%- if lookback_days is not integer or lookback_days < 0 %}
    {{ exceptions.raise_compiler_error(
        "The var lookback_days must be an integer of 0 or more, such as 3,"
        ~ " but got '" ~ lookback_days ~ "'."
    ) }}
{%- endif %}

{%- if (start is none) != (end is none) %}
    {{ exceptions.raise_compiler_error(
        "The vars start and end must be set together or not at all,"
        ~ " but got start=" ~ start ~ " and end=" ~ end ~ "."
    ) }}
{%- endif %}

{%- if start is not none %}
    {%- set start_at = utc_timestamp(start, 'start') %}
    {%- set end_at = utc_timestamp(end, 'end') %}
    {%- if end_at <= start_at %}
        {{ exceptions.raise_compiler_error(
            "The var end (" ~ end ~ ") must be later than start ("
            ~ start ~ ")."
        ) }}
    {%- endif %}
    {#- The interval's end is exclusive, so a day that starts exactly at
        end does not overlap it. #}
    {%- set first_day = start_at.date() %}
    {%- set last_day = (
        end_at - modules.datetime.timedelta(microseconds=1)
    ).date() %}
{%- endif %}

    select distinct event_date
    from {{ transactions }}
    where
        loaded_at > (
            select coalesce(max(last_loaded_at), '-infinity')
            from {{ mart }}
        )
        or event_date >= (
            select max(event_date) - {{ lookback_days }}
            from {{ mart }}
        )
        {%- if start is not none %}
        or event_date between '{{ first_day }}' and '{{ last_day }}'
        {%- endif %}

{% endmacro %}


{#- Parse an ISO 8601 timestamp var into an aware UTC datetime. A value
    without an offset is read as UTC. -#}
{% macro utc_timestamp(value, var_name) %}

{%- set pattern = (
    '^\\d{4}-\\d{2}-\\d{2}'
    ~ '([T ]\\d{2}:\\d{2}(:\\d{2}(\\.\\d{1,6})?)?)?'
    ~ '(Z|[+-]\\d{2}:?\\d{2})?$'
) %}
{%- if not modules.re.match(pattern, value | string) %}
    {{ exceptions.raise_compiler_error(
        "The var " ~ var_name ~ " must be an ISO 8601 timestamp such as"
        ~ " 2018-04-01T00:00:00+00:00, but got '" ~ value ~ "'."
    ) }}
{%- endif %}

{%- set utc = modules.pytz.utc %}
{%- set parsed = modules.datetime.datetime.fromisoformat(value | string) %}
{%- if parsed.tzinfo is none %}
    {%- set parsed = parsed.replace(tzinfo=utc) %}
{%- endif %}
{{ return(parsed.astimezone(utc)) }}

{% endmacro %}
