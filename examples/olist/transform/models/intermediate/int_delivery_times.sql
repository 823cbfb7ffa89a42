-- Time from purchase to delivery per delivered order, in minutes, hours and days,
-- shortest first.
select
    order_id,
    purchased_at,
    delivered_at,
    round({{ seconds_between('purchased_at', 'delivered_at') }} / 60.0, 2) as delivery_minutes,
    round({{ seconds_between('purchased_at', 'delivered_at') }} / 3600.0, 2) as delivery_hours,
    round({{ seconds_between('purchased_at', 'delivered_at') }} / 86400.0, 2) as delivery_days
from {{ ref('stg_orders') }}
where delivered_at is not null
order by delivery_minutes asc
