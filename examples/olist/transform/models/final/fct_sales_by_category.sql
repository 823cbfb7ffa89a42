select category, items_sold, orders, sales
from {{ ref('int_sales_by_category') }}
order by sales desc
