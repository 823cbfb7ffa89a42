-- Sales (sum of item price) per product category, with the English name.
select
    p.category_name_english as category,
    count(*) as items_sold,
    count(distinct i.order_id) as orders,
    sum(i.price) as sales
from {{ ref('stg_order_items') }} i
join {{ ref('stg_products') }} p on p.product_id = i.product_id
group by p.category_name_english
