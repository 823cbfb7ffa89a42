select
    o.order_id,
    o.customer_id,
    o.order_status,
    o.order_purchase_timestamp as purchased_at,
    o.order_delivered_customer_date as delivered_at,
    o.order_estimated_delivery_date as estimated_delivery_at
from {{ ref('orders') }} o
