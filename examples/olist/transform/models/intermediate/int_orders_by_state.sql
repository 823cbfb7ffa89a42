-- Orders per customer state. Each order has exactly one customer row, so this
-- counts orders once (joining geolocation on zip prefix would multiply them).
select
    c.state,
    count(distinct o.order_id) as orders
from {{ ref('stg_orders') }} o
join {{ ref('stg_customers') }} c on c.customer_id = o.customer_id
group by c.state
