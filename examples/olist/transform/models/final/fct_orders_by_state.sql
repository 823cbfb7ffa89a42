select state, orders
from {{ ref('int_orders_by_state') }}
order by orders desc
