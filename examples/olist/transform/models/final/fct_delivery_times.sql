select order_id, purchased_at, delivered_at, delivery_minutes, delivery_hours, delivery_days
from {{ ref('int_delivery_times') }}
order by delivery_minutes asc
